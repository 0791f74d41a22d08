"""Loaded by every Python process the tests start (this directory is put on PYTHONPATH): installs the
network guard of ``course_netguard``, so a test or a notebook kernel that reaches for the internet fails
loudly instead of passing by luck."""
import course_netguard

course_netguard.install()
