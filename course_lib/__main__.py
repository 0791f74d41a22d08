"""Command line: ``python -m course_lib doctor [--verify]`` checks that this machine is ready for the course."""
import sys

COMMANDS = {"doctor": "check Python, packages, device, data, the reference models, "
                      "the pretrained encoder and disk space"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m course_lib COMMAND\n\ncommands:")
        for name, what in COMMANDS.items():
            print(f"  {name:<8} {what}")
        return 2
    from .doctor import main as doctor

    return doctor(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
