"""Train a MAETok tokenizer (``MAETokModel``) with accelerate: mask modelling with auxiliary HOG / DINOv2 / SigLIP
decoders, L2 + LPIPS + GAN. Same loop and options as ``train_softvq.py`` (see there), with MAETok's defaults.
The teachers' patch grids must match the decoder's (patch 16 for the released sizes; SigLIP runs at the
image size with interpolated positions).

    accelerate launch training_scripts/train_maetok.py --preset maetok-b-128 --train-data /data/imagenet/train \\
        --output-dir runs/maetok --mixed-precision bf16 --aux-dinov2-model facebook/dinov2-large \\
        --aux-siglip-model path/to/siglip-patch16 --disc-model facebook/dino-vits16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_softvq  # noqa: E402

from hf_vtok.utils.errors import run_script  # noqa: E402


def main(argv=None) -> Path:
    return train_softvq.main(argv, family="maetok")


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
