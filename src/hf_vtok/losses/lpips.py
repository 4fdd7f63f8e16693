"""LPIPS (Zhang et al. 2018, "v0.1", VGG16 backbone) in plain torch.

The backbone is torchvision's VGG16 ``features`` in its key layout (``features.N.weight``), so the
published ImageNet file ``vgg16-397923af.pth`` loads as is; the five linear heads load from the
published ``vgg.pth`` of LPIPS v0.1 (``lin{k}.model.1.weight``, shapes ``[1, C, 1, 1]``), which also
ships inside the torchmetrics wheel. Used as the perceptual loss of training and, through
``hf_vtok.metrics``, as the LPIPS metric.
"""

import os
from pathlib import Path

import torch
from torch import nn

from ..conversion import load_state_dict_strictly, rename_keys
from ..utils.weights import load_weights
from .frozen import FrozenNetwork

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_VGG_HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"

# conv widths of VGG16 up to relu5_3; "M" is a 2x2 max pool (torchvision's ``cfgs["D"]``)
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# indices in ``features`` of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' input scaling layer: [-1, 1] images to ImageNet statistics
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_MIN_SIZE = 16  # four 2x2 pools before relu5_3


def _bundled_heads_path() -> Path | None:
    """The v0.1 VGG heads inside an installed torchmetrics wheel (same file as the LPIPS release)."""
    try:
        import torchmetrics
    except ImportError:
        return None
    path = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "vgg.pth"
    return path if path.is_file() else None


class VGG16Features(nn.Module):
    """VGG16 convolution trunk up to relu5_3, indexed like torchvision's ``vgg16().features``."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, taps=LPIPS_TAPS) -> list[torch.Tensor]:
        """Activations after each ReLU index in ``taps``."""
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                outputs.append(x)
                if len(outputs) == len(taps):
                    break
        return outputs


class LPIPS(FrozenNetwork):
    """Learned perceptual distance between images in [-1, 1]: ``lpips(x, y) -> [B]``.

    ``LPIPS.from_pretrained()`` loads the published VGG16 and v0.1 heads (paths, URLs or ``hf://``);
    ``LPIPS()`` is randomly initialised (tests). The network is frozen and in eval mode; gradients
    flow to the inputs, so the same module is the training loss.
    """

    def __init__(self):
        super().__init__()
        self.net = VGG16Features()
        # one 1x1 conv (no bias) per tap, weighting squared differences of unit-normalised features
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=False) for channels in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        vgg_weights: str | os.PathLike | None = None,
        head_weights: str | os.PathLike | None = None,
    ) -> "LPIPS":
        """VGG16 ImageNet weights (torchvision layout) + LPIPS v0.1 VGG heads, from paths / URLs.

        Defaults: torchvision's ``vgg16-397923af.pth`` URL, and the heads shipped in torchmetrics (else the
        LPIPS repository's ``vgg.pth``).
        """
        model = cls()
        vgg = load_weights(vgg_weights or VGG16_URL, "VGG16 (torchvision layout)", VGG16_URL)
        vgg = {key: value for key, value in vgg.items() if key.startswith("features.")}
        # torchvision's file also holds the classifier, which LPIPS does not use
        load_state_dict_strictly(model.net, vgg, source="VGG16 weights")
        head_location = head_weights or _bundled_heads_path() or LPIPS_VGG_HEADS_URL
        heads = load_weights(head_location, "LPIPS v0.1 VGG heads", LPIPS_VGG_HEADS_URL)
        heads = rename_keys(heads, [(r"^lin(\d)\.model\.1\.weight$", r"\1.weight")])
        load_state_dict_strictly(model.heads, heads, source="LPIPS heads")
        return model.freeze()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape or input.dim() != 4 or input.shape[1] != 3:
            raise ValueError(
                "LPIPS takes two [B, 3, H, W] images of the same shape, "
                f"got {tuple(input.shape)} and {tuple(target.shape)}"
            )
        if min(input.shape[-2:]) < _MIN_SIZE:
            raise ValueError(
                f"LPIPS-VGG needs images of at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got {tuple(input.shape[-2:])}"
            )
        dtype = self.shift.dtype
        both = torch.cat([input, target]).to(dtype)
        features = self.net((both - self.shift) / self.scale)
        distance = 0
        for feature, head in zip(features, self.heads):
            # unit-normalise over channels (eps outside the sqrt, as LPIPS)
            feature = feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            first, second = feature.chunk(2)
            distance = distance + head((first - second).pow(2)).mean(dim=(2, 3))
        return distance.flatten()


__all__ = ["LPIPS", "LPIPS_CHANNELS", "LPIPS_TAPS", "LPIPS_VGG_HEADS_URL", "VGG16Features", "VGG16_URL"]
