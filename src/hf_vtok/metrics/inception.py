"""The FID InceptionV3: the 2015 TensorFlow Inception graph ported to PyTorch, in plain torch.

Key names and shapes are those of the published FID weights (pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` and torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``:
``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight [1008, 2048]``), so
either file loads as is. The TF graph differs from torchvision's InceptionV3 in its pooling: average pools
inside the blocks exclude padding, and the last block max-pools its pool branch.

``InceptionFeatureExtractor`` wraps the network for torchmetrics' ``FrechetInceptionDistance`` /
``InceptionScore`` (``feature=`` argument) and applies one of the input conventions of the originals.
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..conversion import load_state_dict_strictly
from ..losses.frozen import FrozenNetwork
from ..utils.weights import load_weights

FID_INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
TORCH_FIDELITY_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_SIZE = 299
POOL_FEATURES = 2048
NUM_LOGITS = 1008  # the 2015 graph's 1000 ImageNet classes + 8 unused

# How images reach the network, as each original evaluation feeds it (images arrive in [0, 1] or uint8):
# - "pytorch-fid": bilinear resize to 299 (align_corners=False, no antialias), then 2x - 1 (pytorch-fid, FlowMo).
# - "torch-fidelity": 8-bit values, TF1 bilinear resize (no half-pixel centres), (x - 128) / 128
#   (torch-fidelity and torchmetrics' default FID, used by MAETok / SoftVQ).
# - "vitok": bicubic antialiased resize to 299, clamped, and fed in [0, 1] instead of [-1, 1] (ViTok-v2's
#   evaluation calls pytorch-fid with normalize_input=False; reproduce it only to compare with its numbers).
INPUT_CONVENTIONS = ("pytorch-fid", "torch-fidelity", "vitok")


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _average_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME average pool divides by the number of real pixels in the window
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_average_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_average_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """``pool="avg"`` for Mixed_7b; Mixed_7c of the TF graph max-pools its pool branch."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _average_pool_3x3(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


@dataclass
class InceptionOutput:
    """``pool_features [B, 2048]`` (FID), ``logits_unbiased [B, 1008]`` (IS: pool @ fc.weight.T, as the TF graph's
    softmax input without bias), ``logits [B, 1008]`` (with the bias)."""

    pool_features: torch.Tensor
    logits_unbiased: torch.Tensor
    logits: torch.Tensor


class FIDInceptionV3(FrozenNetwork):
    """InceptionV3 of the FID TF graph; input ``[B, 3, 299, 299]`` already scaled to [-1, 1].

    ``FIDInceptionV3.from_pretrained(path_or_url)`` loads the published FID weights; ``FIDInceptionV3()`` is
    randomly initialised (tests). Frozen and in eval mode.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(POOL_FEATURES, NUM_LOGITS)
        # a random network (tests) should keep its activations at a steady scale through the depth
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        self.freeze()  # batch-norm statistics are part of the metric

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None) -> "FIDInceptionV3":
        """Load FID weights from a path, URL or ``hf://owner/repo/file`` (default: pytorch-fid's release)."""
        model = cls()
        state_dict = load_weights(weights or FID_INCEPTION_URL, "FID InceptionV3", FID_INCEPTION_URL)
        # files saved by older torch lack the (unused) batch-norm step counters
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in state_dict:
                state_dict[key] = value
        load_state_dict_strictly(model, state_dict, source="FID InceptionV3 weights")
        return model.freeze()

    def forward(self, pixel_values: torch.Tensor) -> InceptionOutput:
        x = pixel_values.to(self.fc.weight.dtype)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        pool = F.adaptive_avg_pool2d(x, 1).flatten(1)
        logits_unbiased = pool @ self.fc.weight.t()
        return InceptionOutput(pool, logits_unbiased, logits_unbiased + self.fc.bias)


def _resize_axis_tf1_bilinear(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)`` along one axis: source = index * in/out (no half-pixel shift)."""
    in_size = x.shape[dim]
    scale = torch.tensor(in_size / size, dtype=torch.float32)
    source = torch.arange(size, dtype=torch.float32) * scale
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    weight_shape = [1] * x.dim()
    weight_shape[dim] = size
    weight = (source - low.float()).view(weight_shape).to(device=x.device, dtype=x.dtype)
    low_values = x.index_select(dim, low.to(x.device))
    high_values = x.index_select(dim, high.to(x.device))
    return low_values + (high_values - low_values) * weight


def prepare_inception_input(images: torch.Tensor, convention: str = "pytorch-fid") -> torch.Tensor:
    """``[B, 3, H, W]`` images (uint8, or float in [0, 1]) -> the ``[B, 3, 299, 299]`` network input of a
    convention."""
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(f"Inception input convention must be one of {INPUT_CONVENTIONS}, got {convention!r}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Inception features need [B, 3, H, W] RGB images, got shape {tuple(images.shape)}")
    size = (INCEPTION_SIZE, INCEPTION_SIZE)
    if convention == "torch-fidelity":
        pixels = images.float() if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round()
        if pixels.shape[-2:] != size:
            pixels = _resize_axis_tf1_bilinear(_resize_axis_tf1_bilinear(pixels, size[0], 2), size[1], 3)
        return (pixels - 128) / 128
    pixels = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if convention == "pytorch-fid":
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        return 2 * pixels - 1
    if pixels.shape[-2:] != size:
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
    return pixels.clamp(0, 1)


class InceptionFeatureExtractor(nn.Module):
    """Images -> Inception features, the ``feature=`` module of torchmetrics' FID and Inception Score.

    ``output="pool_features"`` (2048-d, FID) or ``"logits_unbiased"`` (1008-d, IS). Images are uint8 or float
    in [0, 1], ``[B, 3, H, W]`` of any size. Extractors built with one ``shared_run`` dict share the network run
    of the last batch: FID and IS of the same samples then cost one forward pass.
    """

    def __init__(
        self,
        network: FIDInceptionV3,
        output: str = "pool_features",
        input_convention: str = "pytorch-fid",
        shared_run: dict | None = None,
    ):
        super().__init__()
        if output not in ("pool_features", "logits_unbiased", "logits"):
            raise ValueError(f"output must be 'pool_features', 'logits_unbiased' or 'logits', got {output!r}")
        if input_convention not in INPUT_CONVENTIONS:
            raise ValueError(f"input_convention must be one of {INPUT_CONVENTIONS}, got {input_convention!r}")
        self.network = network
        self.output = output
        self.input_convention = input_convention
        self.num_features = POOL_FEATURES if output == "pool_features" else NUM_LOGITS
        self._shared_run = shared_run

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        shared = self._shared_run
        if shared is not None and shared.get("images") is images:
            result = shared["result"]
        else:
            device = self.network.fc.weight.device
            result = self.network(prepare_inception_input(images.to(device), self.input_convention))
            if shared is not None:
                shared.update(images=images, result=result)
        return getattr(result, self.output).float()
