"""Evaluation: image metrics (PSNR, SSIM, FID/KID), scoring a translator on test images, and what a
translator is worth downstream."""
