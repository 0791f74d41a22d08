"""Generative AI from scratch: reusable components for the course notebooks.

Modules, one concern each:

- ``profiles``: the smoke / cpu / gpu switch and per-notebook sizes
- ``device``: device choice and seeding
- ``precision``: the mixed-precision policy (autocast dtype, loss scaler) every training loop uses
- ``files``: atomic writes, checksums, paths as a learner should see them
- ``data``: datasets from one data root, checked by sha256
- ``checks``: the image format (``IMAGE_SHAPE``, ``NUM_CLASSES``) and the input checks every module shares
- ``train``: a small training loop, loss history, checkpoints, accuracy, parameter and FLOP counts
- ``viz``: image grids, loss curves, side-by-side rows, animations
- ``results``: the results record each notebook writes at its end
- ``fcd``: the Frechet classifier distance for 28x28 images
- ``mixtures``: Gaussian mixtures fitted by EM (notebook 00)
- ``divergences``: KL divergences, Monte Carlo estimates, kernel density estimates (notebook 01)
- ``autoencoders``: autoencoders, corruptions for denoising, PSNR (notebook 02)
- ``vae``: the variational autoencoder, ELBO and IWAE bounds (notebook 03)
- ``gan``: DCGAN networks, GAN losses, the gradient penalty, a GAN training loop (notebooks 04-05)
- ``cyclegan``: CycleGAN networks, losses and training, unpaired domains with a hidden truth (notebook 06)
- ``diffusion``: noise schedules, the simple loss, DDPM and DDIM sampling, guidance (notebooks 07-08)
- ``unet``: a small UNet with time and class embeddings, attention at low resolution (notebooks 07-08)
- ``latent``: a KL-regularised autoencoder with a spatial latent, the latent scale factor (notebook 08b)
- ``captions``: generated captions with held-out phrasings, a frozen pretrained text encoder (notebook 08b)
- ``text_unet``: a latent UNet conditioned on captions by cross-attention, its loss and sampler (notebook 08b)
- ``attention``: scaled dot-product and multi-head attention, masks, positions, KV cache (notebook 09)
- ``gpt``: a GPT-2-compatible decoder-only Transformer, sampling, export to transformers (notebooks 09-10)
- ``audio``: log-mel spectrograms, Griffin-Lim inversion, a spoken-digit classifier (notebook 08)
- ``seq2seq``: an encoder-decoder Transformer for translation, beam search, cross-attention maps (notebook 11)
- ``ner``: named-entity recognition with a pretrained encoder, entity-level scores (notebooks 12-13)
- ``lora``: low-rank adaptation (LoRA) of Linear layers, merging, parameter counts (notebook 13)
- ``adapters``: Houlsby bottleneck adapters after the attention and feed-forward outputs (notebook 13)
- ``metrics``: KID, precision/recall/density/coverage, memorization, the bootstrap, CAS (notebooks 14-15)
- ``zoo``: one-call training recipes and sampling for every image generator of the course (notebooks 04-08, 14-15)
- ``synthetic``: scarce labelled subsets, filtering, accuracy vs N, paired gains, data cards (notebook 15)
- ``doctor``: ``python -m course_lib doctor`` checks a machine for the course, with the fix for each problem
- ``distributed``: data-parallel GPT training under torchrun (DDP), gradient accumulation, mixed precision
- ``exercises``: auto-checks for the notebooks' exercises
- ``notebook``: the set-up call at the top of every notebook
"""
from .device import describe_device, get_device, seed_everything
from .notebook import setup
from .profiles import PROFILES, ProfileError, active_profile, sizes
from .results import record_results

__version__ = "0.1.0"
__all__ = [
    "PROFILES", "ProfileError", "active_profile", "sizes",
    "get_device", "describe_device", "seed_everything",
    "setup", "record_results",
]
