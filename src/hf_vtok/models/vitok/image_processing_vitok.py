"""NaFlex image processor of ViTok-v2: any resolution and aspect ratio to a padded patch sequence."""

import ast
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import ImageProcessingMixin  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import Unpack

from ...image_processing_utils import VisualTokenizerImageProcessor, VisualTokenizerImagesKwargs, same_channels
from ...modules import grid_positions, patchify, scatter_to_canvas
from ...utils.images import adm_center_crop, resize_longest_side

RESIZE_MODES = ("longest_edge", "token_budget")
PADDING_MODES = ("max_length", "longest")
OVER_BUDGET_MODES = ("resize", "error")
_NORMALIZE_MODES = {
    "minus_one_to_one": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}


class ViTokImageProcessorKwargs(VisualTokenizerImagesKwargs, total=False):
    r"""
    patch_size (`int`): pixels per patch side.
    max_num_patches (`int` or `None`): token budget per image; sequences are padded to it when
        `padding="max_length"`. `None` means no budget (sequences padded to the longest in the batch).
    resize_mode (`str`): with `do_resize`, `"longest_edge"` (PIL resize so the longest side is at most
        `size["longest_edge"]`, downscale only) or `"token_budget"` (bicubic antialiased resize of the
        normalized image to the largest patch grid within `max_num_patches`).
    padding (`str`): `"max_length"` pads every sequence to `max_num_patches` (what the original does),
        `"longest"` to the longest sequence of the batch.
    over_budget (`str`): what happens to an image that needs more than `max_num_patches` patches:
        `"resize"` (default) resizes it to the token budget keeping its aspect ratio, as ViTok-v2 prepares its
        training and inference images (`resize_to_token_budget`); `"error"` refuses it, as the original
        `patchify` alone does.
    """

    patch_size: int
    max_num_patches: int | None
    resize_mode: str
    padding: str
    over_budget: str


def token_budget_size(height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5):
    """Largest ``(h, w) <= (height, width)`` whose patch grid fits ``max_num_patches``, as ViTok-v2 picks it."""
    rows, cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    if rows * cols <= max_num_patches:
        return height, width
    scale = math.sqrt(max_num_patches / (rows * cols))
    new_rows = max(1, math.floor(rows * scale + eps))
    new_cols = max(1, math.floor(cols * scale + eps))
    return min(new_rows * patch_size, height), min(new_cols * patch_size, width)


def naflex_patches(pixels: torch.Tensor, patch_size: int, token_budget: int | None = None) -> dict:
    """One normalized image ``[3, H, W]`` -> its unpadded NaFlex sample, the per-image step of ``ViTokImageProcessor``.

    With a ``token_budget`` the image is first resized (bicubic, antialiased) to ``token_budget_size``. It is
    zero-padded to whole patches and patchified into ``(c, y, x)``-ordered vectors in raster order. Returns
    ``pixel_values [N, 3*p*p]``, ``patch_mask`` (all True), ``row_idx`` / ``col_idx`` ``[N]``, and as ints
    ``orig_height`` / ``orig_width`` (the size before padding) and ``grid_rows`` / ``grid_cols``.
    """
    height, width = pixels.shape[-2:]
    if token_budget is not None:
        target = token_budget_size(height, width, patch_size, token_budget)
        if target != (height, width):
            pixels = F.interpolate(pixels[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
            height, width = target
    rows, cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    padded = F.pad(pixels, (0, cols * patch_size - width, 0, rows * patch_size - height), value=0.0)
    row_idx, col_idx = grid_positions(rows, cols)
    return {
        "pixel_values": patchify(padded[None], patch_size)[0],
        "patch_mask": torch.ones(rows * cols, dtype=torch.bool),
        "row_idx": row_idx[0],
        "col_idx": col_idx[0],
        "orig_height": height,
        "orig_width": width,
        "grid_rows": rows,
        "grid_cols": cols,
    }


class ViTokImageProcessor(VisualTokenizerImageProcessor):
    r"""Turns images into ViTok-v2 NaFlex patch sequences and decoded patches back into images.

    Steps (each optional as in the original's pre-processing language): ADM center crop
    (`do_center_crop`, `crop_size`), longest-edge PIL resize (`do_resize`, `resize_mode="longest_edge"`,
    `size={"longest_edge": S}`, `resample`), rescale to [0, 1], normalize (default to [-1, 1]),
    token-budget resize (`resize_mode="token_budget"`), zero padding (after normalization) to a
    multiple of the patch size, and patchify into ``(c, y, x)``-ordered vectors in raster order.

    Returns a `BatchFeature` with `pixel_values [B, N, 3*p*p]`, `patch_mask [B, N]`, `row_idx`,
    `col_idx`, `time_idx` `[B, N]`, and per image `orig_height`, `orig_width` (the size the model sees, before
    patch padding), `grid_rows`, `grid_cols`. Padding tokens are zero vectors at position (0, 0).

    Any size and aspect ratio goes in: an image within `max_num_patches` keeps its size, a larger one is resized
    to the token budget keeping its aspect ratio (`over_budget="resize"`, ViTok-v2's `resize_to_token_budget`;
    `over_budget="error"` refuses it instead). `postprocess` returns each image at the size the model saw.
    """

    valid_kwargs = ViTokImageProcessorKwargs
    model_input_names = ["pixel_values", "patch_mask", "row_idx", "col_idx"]
    resample = PILImageResampling.LANCZOS
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_resize = False
    resize_mode = "longest_edge"
    size = None
    do_center_crop = False
    crop_size = None
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    patch_size = 16
    max_num_patches = 256
    padding = "max_length"
    # a folder saved before this setting existed loads with it too: its over-budget images are resized
    over_budget = "resize"

    def __init__(self, **kwargs: Unpack[ViTokImageProcessorKwargs]):
        super().__init__(**kwargs)
        self._check_settings(
            self.resize_mode,
            self.padding,
            self.max_num_patches,
            self.do_resize,
            self.size,
            self.patch_size,
            self.over_budget,
        )

    @staticmethod
    def _check_settings(resize_mode, padding, max_num_patches, do_resize, size, patch_size, over_budget="resize"):
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if over_budget not in OVER_BUDGET_MODES:
            raise ValueError(f"over_budget must be one of {OVER_BUDGET_MODES}, got {over_budget!r}")
        if max_num_patches is not None and max_num_patches <= 0:
            raise ValueError(f"max_num_patches must be positive or None, got {max_num_patches}")
        if padding == "max_length" and max_num_patches is None:
            raise ValueError('padding="max_length" needs max_num_patches; use padding="longest" for no budget')
        if do_resize and resize_mode == "token_budget" and max_num_patches is None:
            raise ValueError('resize_mode="token_budget" needs max_num_patches')
        if do_resize and resize_mode == "longest_edge" and (size is None or not size.longest_edge):
            raise ValueError('resize_mode="longest_edge" needs size={"longest_edge": <pixels>}')
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")

    _unchecked_kwargs = ("do_resize", "do_center_crop")  # sizes are computed per image

    def _validate_preprocess_kwargs(self, **kwargs):
        self._check_settings(
            kwargs["resize_mode"],
            kwargs["padding"],
            kwargs["max_num_patches"],
            kwargs["do_resize"],
            kwargs["size"],
            kwargs["patch_size"],
            kwargs["over_budget"],
        )
        return super()._validate_preprocess_kwargs(**kwargs)

    # ----------------------------------------------------------------------------------------------
    def _fit_image(
        self,
        index: int,
        image,
        do_resize: bool,
        resize_mode: str,
        size,
        resample,
        do_center_crop: bool,
        crop_size,
        **kwargs,
    ):
        """The 8-bit steps: ADM center crop and longest-edge resize (PIL)."""
        needs_pil = do_center_crop or (do_resize and resize_mode == "longest_edge")
        if needs_pil and not isinstance(image, Image.Image):
            raise ValueError(
                f"image {index}: center crop and longest-edge resize run on 8-bit images; "
                "pass PIL / uint8 images, or disable them for float inputs"
            )
        if do_center_crop:
            if crop_size is None or crop_size.height != crop_size.width:
                raise ValueError(f"the ADM center crop is square; got crop_size={crop_size}")
            image = adm_center_crop(image, crop_size.height)
        if do_resize and resize_mode == "longest_edge":
            image = resize_longest_side(image, size.longest_edge, resample=PILImageResampling(resample))
        return image

    def _pack(
        self,
        pixels: list[torch.Tensor],
        do_resize: bool,
        resize_mode: str,
        patch_size: int,
        max_num_patches: int | None,
        padding: str,
        over_budget: str = "resize",
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """Normalized images -> NaFlex samples (``naflex_patches``), padded to one sequence length."""
        resizes = (do_resize and resize_mode == "token_budget") or over_budget == "resize"
        token_budget = max_num_patches if resizes else None
        samples = [naflex_patches(image, patch_size, token_budget) for image in same_channels(pixels)]
        counts = [sample["grid_rows"] * sample["grid_cols"] for sample in samples]
        for index, (sample, count) in enumerate(zip(samples, counts)):
            if max_num_patches is not None and count > max_num_patches:
                raise ValueError(
                    f"image {index} ({sample['orig_width']}x{sample['orig_height']} pixels, WxH) needs "
                    f"{sample['grid_rows']}x{sample['grid_cols']}={count} patches of {patch_size}px, over "
                    f"max_num_patches={max_num_patches}; resize it (over_budget='resize', or do_resize=True with "
                    "resize_mode='token_budget' or 'longest_edge') or raise max_num_patches"
                )
        length = max_num_patches if padding == "max_length" else max(counts)
        batch = {
            key: samples[0][key].new_zeros((len(samples), length, *samples[0][key].shape[1:]))
            for key in ("pixel_values", "patch_mask", "row_idx", "col_idx")
        }
        for index, (sample, count) in enumerate(zip(samples, counts)):
            for key, padded in batch.items():
                padded[index, :count] = sample[key]
        batch["time_idx"] = torch.zeros(len(samples), length, dtype=torch.long)
        for key in ("orig_height", "orig_width", "grid_rows", "grid_cols"):
            batch[key] = torch.tensor([sample[key] for sample in samples])
        return batch

    # ----------------------------------------------------------------------------------------------
    def _layout(self, outputs, patch_mask, row_idx, col_idx, orig_height, orig_width):
        """Take the layout fields from a decoder output / BatchFeature when not given explicitly."""
        sample = self._sample_of(outputs)
        if isinstance(outputs, Mapping):
            patch_mask = outputs.get("patch_mask") if patch_mask is None else patch_mask
            row_idx = outputs.get("row_idx") if row_idx is None else row_idx
            col_idx = outputs.get("col_idx") if col_idx is None else col_idx
            orig_height = outputs.get("orig_height") if orig_height is None else orig_height
            orig_width = outputs.get("orig_width") if orig_width is None else orig_width
        return sample, patch_mask, row_idx, col_idx, orig_height, orig_width

    def to_canvas(
        self,
        outputs,
        patch_mask=None,
        row_idx=None,
        col_idx=None,
        grid_size: tuple[int, int] | None = None,
        patch_size: int | None = None,
    ) -> torch.Tensor:
        """Patch sequences ``[B, N, 3*p*p]`` -> one ``[B, 3, rows*p, cols*p]`` canvas for the whole batch.

        The grid is the batch's largest valid extent unless ``grid_size`` is given; cells no valid
        token covers are 0 (mid-gray in [-1, 1]).
        """
        sample, patch_mask, row_idx, col_idx, _, _ = self._layout(outputs, patch_mask, row_idx, col_idx, None, None)
        sample = torch.as_tensor(sample)
        patch_size = patch_size or self.patch_size
        if sample.dim() != 3:
            raise ValueError(f"to_canvas needs patch sequences [B, N, 3*p*p], got shape {tuple(sample.shape)}")
        if row_idx is None or col_idx is None:
            raise ValueError("patch sequences need row_idx and col_idx to be placed on an image")
        row_idx, col_idx = torch.as_tensor(row_idx), torch.as_tensor(col_idx)
        patch_mask = torch.ones_like(row_idx, dtype=torch.bool) if patch_mask is None else torch.as_tensor(patch_mask)
        if grid_size is None:
            grid_size = (int(row_idx[patch_mask].max()) + 1, int(col_idx[patch_mask].max()) + 1)
        channels = sample.shape[-1] // patch_size**2
        return scatter_to_canvas(sample, patch_mask, row_idx, col_idx, grid_size, patch_size, channels)

    def postprocess(
        self,
        outputs,
        patch_mask=None,
        row_idx=None,
        col_idx=None,
        orig_height=None,
        orig_width=None,
        output_type: str = "pil",
        do_denormalize: bool = True,
        patch_size: int | None = None,
    ):
        """Decoded patches (or images ``[B, 3, H, W]``) -> one image per input, at its own size.

        ``outputs`` is a ``ViTokDecoderOutput`` (its layout fields are used), a processor
        ``BatchFeature``, or a tensor with the layout passed explicitly. Images are cropped to
        ``orig_height x orig_width`` (the size before patch padding), else to their patch grid.
        ``output_type``: ``"pil"``, ``"np"`` (HWC float) or ``"pt"`` (CHW float); with
        ``do_denormalize=False`` np/pt stay in model space ([-1, 1], unclamped).
        """
        sample, patch_mask, row_idx, col_idx, orig_height, orig_width = self._layout(
            outputs, patch_mask, row_idx, col_idx, orig_height, orig_width
        )
        sample = torch.as_tensor(sample)
        patch_size = patch_size or self.patch_size
        if sample.dim() == 4:
            canvas = sample
            extents = [(canvas.shape[-2], canvas.shape[-1])] * canvas.shape[0]
        elif sample.dim() == 3:
            canvas = self.to_canvas(sample, patch_mask, row_idx, col_idx, patch_size=patch_size)
            mask = torch.ones_like(torch.as_tensor(row_idx), dtype=torch.bool) if patch_mask is None else patch_mask
            extents = [
                (
                    (int(torch.as_tensor(row_idx)[index][mask[index]].max()) + 1) * patch_size,
                    (int(torch.as_tensor(col_idx)[index][mask[index]].max()) + 1) * patch_size,
                )
                for index in range(sample.shape[0])
            ]
        else:
            raise ValueError(
                f"postprocess needs [B, N, 3*p*p] patches or [B, 3, H, W] images, got {tuple(sample.shape)}"
            )
        if orig_height is not None and orig_width is not None:
            extents = [(int(height), int(width)) for height, width in zip(orig_height, orig_width)]
        images = [canvas[index, :, :height, :width] for index, (height, width) in enumerate(extents)]
        return self._convert_output(images, output_type, do_denormalize)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_original_pp(cls, pp: str, **kwargs) -> "ViTokImageProcessor":
        """Processor equivalent to an original ViTok pre-processing string, e.g.
        ``"resize_longest_side(512)|to_tensor|normalize(minus_one_to_one)|patchify(16, 1024)"``.

        Random training augmentations (``random_resized_crop``, ``flip``, ``random_choice``) are not
        pre-processing and are rejected. An image over the string's budget is an error, as in the original.
        """
        settings: dict = {
            "do_rescale": False,
            "do_normalize": False,
            "do_resize": False,
            "do_center_crop": False,
            "over_budget": "error",
        }
        seen_tensor = seen_patchify = False
        for raw_op in pp.split("|"):
            name, args = _parse_pp_op(raw_op.strip(), pp)
            if seen_patchify:
                raise ValueError(f"pre-processing {pp!r}: nothing may follow patchify (found {name!r})")
            if name == "identity":
                continue
            if name in ("resize_longest_side", "center_crop"):
                if seen_tensor:
                    raise ValueError(f"pre-processing {pp!r}: {name} must come before to_tensor")
                (pixels,) = _expect_ints(name, args, 1, pp)
                if name == "center_crop":
                    settings.update(do_center_crop=True, crop_size={"height": pixels, "width": pixels})
                else:
                    if settings["do_resize"]:
                        raise ValueError(f"pre-processing {pp!r}: only one resize op is supported")
                    settings.update(do_resize=True, resize_mode="longest_edge", size={"longest_edge": pixels})
            elif name == "to_tensor":
                seen_tensor = True
                settings["do_rescale"] = True
            elif name == "normalize":
                mode = args[0] if args else "minus_one_to_one"
                if mode == "zero_to_one":
                    settings["do_normalize"] = False
                elif mode in _NORMALIZE_MODES:
                    mean, std = _NORMALIZE_MODES[mode]
                    settings.update(do_normalize=True, image_mean=mean, image_std=std)
                else:
                    raise ValueError(f"pre-processing {pp!r}: unknown normalize mode {mode!r}")
            elif name == "resize_to_token_budget":
                patch, budget = _expect_ints(name, args, 2, pp)
                if settings["do_resize"]:
                    raise ValueError(f"pre-processing {pp!r}: only one resize op is supported")
                settings.update(do_resize=True, resize_mode="token_budget", max_num_patches=budget)
                settings["_budget_patch"] = patch
            elif name == "patchify":
                patch, budget = _expect_ints(name, args, 2, pp)
                settings.update(patch_size=patch, max_num_patches=budget)
                seen_patchify = True
            else:
                raise ValueError(
                    f"pre-processing {pp!r}: op {name!r} is not deterministic pre-processing "
                    "(supported: resize_longest_side, center_crop, to_tensor, normalize, resize_to_token_budget, "
                    "patchify, identity)"
                )
        if not seen_patchify:
            raise ValueError(f"pre-processing {pp!r} must end with patchify(<patch>, <max tokens>)")
        budget_patch = settings.pop("_budget_patch", None)
        if budget_patch is not None and budget_patch != settings["patch_size"]:
            raise ValueError(f"pre-processing {pp!r}: resize_to_token_budget and patchify use different patch sizes")
        settings.update(kwargs)
        return cls(**settings)


def _parse_pp_op(op: str, pp: str):
    """``name(arg, ...)`` -> (name, [literal args]); bare identifiers are strings, as in the original DSL."""
    try:
        node = ast.parse(op, mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"pre-processing {pp!r}: cannot parse op {op!r}") from error
    if isinstance(node, ast.Name):
        return node.id, []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [arg.id if isinstance(arg, ast.Name) else ast.literal_eval(arg) for arg in node.args]
        return node.func.id, args
    raise ValueError(f"pre-processing {pp!r}: cannot parse op {op!r}")


def _expect_ints(name, args, count, pp):
    if len(args) != count or not all(isinstance(arg, int) and arg > 0 for arg in args):
        raise ValueError(f"pre-processing {pp!r}: {name} takes {count} positive integer argument(s), got {args}")
    return args
