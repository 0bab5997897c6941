"""chromagan-jax: ChromaGAN (Vitoria, Raad & Ballester, WACV 2020) in JAX/Flax."""

__version__ = "0.1.0"
