"""The explanation engine: batched class-activation and gradient maps, one forward pass per batch.

A `Probe` runs a model up to a target layer and on to its logits. Each
method is a pure function `(probe, images, class_index) -> raw maps`
that differs only in how it weights the target layer's channels (or, for
gradient methods, which input gradient it takes). `explain_batch` adds the
shared post-processing: bilinear upsampling to the input size and per-image
normalisation to [0, 1], keeping each map's raw peak and flagging empty ones.

Per-image weights come from one gradient of the *sum* of the batch's target
logits: in inference mode images do not interact, so each image's gradient is
its own. Channel weights are averaged over each image's spatial axes only,
never over the batch (seed 000's bug).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy.ndimage import zoom

from cxr.catalogs.methods import METHOD_SPECS, METHODS_BY_NAME
from cxr.errors import ConfigError, CxrError
from cxr.explain.probe import Probe

EMPTY_PEAK = 1e-12  # a raw map whose peak is at most this is flagged empty


@dataclass(frozen=True)
class Explanation:
    """Maps for one batch; arrays are numpy, first axis = image."""

    # B = images, or images x classes for several classes per image (image-major)
    maps: np.ndarray  # (B, H, W) in [0, 1] at the input size
    # (B, h, w) before upsampling and normalisation, at the target layer's size
    raw_maps: np.ndarray
    raw_peak: np.ndarray  # (B,) the peak of each raw map: comparable across images
    empty: np.ndarray  # (B,) bool: the map is zero everywhere
    logits: np.ndarray  # (B, C)
    class_index: np.ndarray  # (B,) the class explained for each image


def resolve_targets(logits: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    """Class index -1 means the predicted class, -2 the second most probable, -(r + 1) the r-th
    (argsort of the logits; a single-logit head ranks its two classes by the logit's sign).
    `class_index` is (B,) or, for several targets per image, (B, K)."""
    if logits.shape[-1] == 1:
        predicted = tf.cast(logits[:, 0] > 0, tf.int32)
        ranked = tf.stack([predicted, 1 - predicted], axis=1)
    else:
        ranked = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    rank = tf.clip_by_value(-class_index - 1, 0, ranked.shape[-1] - 1)
    picked = tf.gather(tf.cast(ranked, tf.int32), rank, axis=1, batch_dims=1)
    return tf.where(class_index < 0, picked, class_index)


def several_targets(class_index: tf.Tensor) -> int:
    """K for (B, K) targets per image, 0 for one target per image."""
    return class_index.shape[1] if class_index.shape.rank == 2 else 0


def per_target(tensor: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    """The batch once per target, image-major (image b's k-th target at b * K + k), for (B, K)
    targets; unchanged for one target per image."""
    count = several_targets(class_index)
    return tf.repeat(tensor, count, axis=0) if count else tensor


def _target_columns(logits: tf.Tensor, class_index: tf.Tensor) -> list[tf.Tensor]:
    """The (B,) target logits of each target column (one column for one target per image); to be
    computed under the gradient tape."""
    if not several_targets(class_index):
        return [_target_logits(logits, class_index)]
    return [_target_logits(logits, column) for column in tf.unstack(class_index, axis=1)]


def _gradients_per_target(tape, targets: list[tf.Tensor], source: tf.Tensor) -> tf.Tensor:
    """d(target)/d(source) for each target column, image-major like `per_target`: one backward
    pass per target from the same forward pass."""
    grads = [tape.gradient(target, source) for target in targets]
    if len(grads) == 1:
        return grads[0]
    stacked = tf.stack(grads, axis=1)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(source)[1:]], axis=0))


def _target_logits(logits: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    """Each image's own target logit; a single-logit head explains its negative class with
    -logit."""
    class_index = resolve_targets(logits, class_index)
    if logits.shape[-1] == 1:
        return tf.where(class_index == 0, -1.0, 1.0) * logits[:, 0]
    return tf.gather(logits, class_index, axis=1, batch_dims=1)


def _activations_and_grads(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Target-layer activations and the target logit's gradients, both float32 (also for a float16
    model). For (B, K) targets: one forward pass and K backward passes, returned per target."""
    split = probe.split
    # with a split model the tape records the head only; else the whole model, differentiated at
    # the target layer
    activations = split[0](images, training=False) if split else None
    with tf.GradientTape(persistent=bool(several_targets(class_index))) as tape:
        if split:
            tape.watch(activations)
            logits = split[1](activations, training=False)
        else:
            activations, logits = probe(images)
        logits = tf.cast(logits, tf.float32)
        targets = _target_columns(logits, class_index)
    grads = _gradients_per_target(tape, targets, activations)
    return (
        per_target(tf.cast(activations, tf.float32), class_index),
        tf.cast(grads, tf.float32),
        per_target(logits, class_index),
    )


def gradcam(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Selvaraju et al. 2017: weights = spatial mean of each image's gradients; ReLU of the weighted
    sum."""
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B, 1, 1, K): per image
    return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))


def gradcam_plus_plus(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Chattopadhyay et al. 2018: positive gradients weighted by the closed-form alpha of the
    exp-logit derivation."""
    g2, g3 = grads**2, grads**3
    total = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    denominator = 2 * g2 + total * g3
    alpha = tf.math.divide_no_nan(
        g2, tf.where(tf.abs(denominator) > 0, denominator, tf.ones_like(denominator))
    )
    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))


def hirescam(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Draelos & Carin 2020: gradients times activations element-wise, so the map shows where the
    logit comes from."""
    return tf.nn.relu(tf.reduce_sum(grads * activations, axis=-1))


def layercam(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Jiang et al. 2021: positive gradients times activations, element-wise, summed over
    channels; usable at earlier, finer layers."""
    return tf.nn.relu(tf.reduce_sum(tf.nn.relu(grads) * activations, axis=-1))


def xgradcam(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Fu et al. 2020: each channel's gradients averaged with weights = its activations over their
    spatial sum (0 for an all-zero channel)."""
    total = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    weights = tf.reduce_sum(tf.math.divide_no_nan(activations, total) * grads, axis=(1, 2))
    return tf.nn.relu(tf.reduce_sum(weights[:, None, None, :] * activations, axis=-1))


def eigencam(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Muhammad & Yeasin 2020: each image's activations projected on their first principal
    component (centred over positions); no gradients, and the same map for every class. The sign
    is chosen so the map agrees with the channel-summed activations."""
    activations, logits = probe(images)
    activations, logits = tf.cast(activations, tf.float32), tf.cast(logits, tf.float32)
    shape = tf.shape(activations)
    flat = tf.reshape(activations, (shape[0], -1, shape[3]))  # (B, hw, K)
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(centred)  # v: (B, K, K), columns the principal directions
    projection = tf.einsum("bpk,bk->bp", centred, v[:, :, 0])
    agreement = tf.reduce_sum(projection * tf.reduce_sum(centred, axis=-1), axis=1, keepdims=True)
    projection *= tf.where(agreement < 0, -1.0, 1.0)
    return tf.nn.relu(tf.reshape(projection, shape[:3])), logits


def ablationcam(probe: Probe, images: tf.Tensor, class_index: tf.Tensor, chunk: int = 8):
    """Desai & Ramaswamy 2020: each channel weighted by the relative drop of the target logit when
    that channel alone is zeroed, (y - y_k) / y; one pass of the model's head per channel."""
    activations, logits = probe(images)
    activations, logits = tf.cast(activations, tf.float32), tf.cast(logits, tf.float32)
    class_index = resolve_targets(logits, class_index)
    base = _target_logits(logits, class_index)  # (B,)
    head = probe.head()
    batch, channels = tf.shape(activations)[0], activations.shape[-1]
    height, width = activations.shape[1], activations.shape[2]
    drops = []
    for start in range(0, channels, chunk):
        count = min(chunk, channels - start)
        keep = 1.0 - tf.one_hot(tf.range(start, start + count), channels)  # (c, K)
        ablated = activations[:, None] * keep[None, :, None, None, :]  # (B, c, h, w, K)
        out = head(tf.reshape(ablated, (-1, height, width, channels)), training=False)
        target = _target_logits(tf.cast(out, tf.float32), tf.repeat(class_index, count))
        drops.append(base[:, None] - tf.reshape(target, (batch, count)))
    weights = tf.math.divide_no_nan(tf.concat(drops, axis=1), base[:, None])  # (B, K)
    return tf.nn.relu(tf.reduce_sum(weights[:, None, None, :] * activations, axis=-1)), logits


def scorecam(probe: Probe, images: tf.Tensor, class_index: tf.Tensor, chunk: int = 8):
    """Wang et al. 2020: weight each channel by the target's probability when the input is masked by
    that channel's upsampled, min-max normalised activation; no gradients. Costs one forward pass
    per channel."""
    activations, logits = probe(images)
    activations, logits = tf.cast(activations, tf.float32), tf.cast(logits, tf.float32)
    class_index = resolve_targets(logits, class_index)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    scores = []
    for start in range(0, activations.shape[-1], chunk):
        part = activations[..., start : start + chunk]  # (B, h, w, c)
        masks = tf.image.resize(part, (height, width), method="bilinear")
        low = tf.reduce_min(masks, axis=(1, 2), keepdims=True)
        masks = tf.math.divide_no_nan(
            masks - low, tf.reduce_max(masks, axis=(1, 2), keepdims=True) - low
        )
        count = part.shape[-1]
        masked = tf.transpose(masks, (0, 3, 1, 2))[..., None] * images[:, None]  # (B, c, H, W, C)
        _, masked_logits = probe(tf.reshape(masked, (-1, height, width, images.shape[-1])))
        probs = _class_probabilities(tf.cast(masked_logits, tf.float32), probe.multi_label)
        targets = tf.repeat(class_index, count)
        scores.append(tf.reshape(tf.gather(probs, targets, axis=1, batch_dims=1), (batch, count)))
    weights = tf.concat(scores, axis=1)[:, None, None, :]
    return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)), logits


OCCLUSION_PATCH = 0.125  # the occluding square's side, as a share of the image's side
OCCLUSION_STRIDE = 0.0625  # its step, likewise
RISE_MASKS, RISE_CELLS, RISE_KEEP, RISE_SEED = 512, 8, 0.5, 0
# occluders and masks become constants of the traced function: TensorFlow refuses more than 2 GB
CONSTANT_LIMIT = 2**30


def check_constant(count: int, height: int, width: int, what: str) -> None:
    """A clear error for perturbations too many to hold (and the setting that makes them)."""
    size = count * height * width * 4
    if size > CONSTANT_LIMIT:
        raise ConfigError(
            f"{what}: {count} of {height}x{width} would take {size / 2**30:.1f} GB (at most "
            f"{CONSTANT_LIMIT / 2**30:.0f} GB); lower it, or explain at a smaller data.image_size"
        )


def occlusion_patches(
    height: int, width: int, patch: float = OCCLUSION_PATCH, stride: float = OCCLUSION_STRIDE
) -> np.ndarray:
    """(P, H, W) float32: one square of ones per position of the sliding occluder, zeros
    elsewhere; the last row and column of positions reach the image's edges."""
    side = max(1, round(patch * min(height, width)))
    step = max(1, round(stride * min(height, width)))
    tops = sorted({*range(0, height - side + 1, step), height - side})
    lefts = sorted({*range(0, width - side + 1, step), width - side})
    check_constant(
        len(tops) * len(lefts),
        height,
        width,
        f"occlusion squares (explain.occlusion_patch {patch:g}, occlusion_stride {stride:g})",
    )
    patches = np.zeros((len(tops) * len(lefts), height, width), np.float32)
    for i, (top, left) in enumerate((t, w) for t in tops for w in lefts):
        patches[i, top : top + side, left : left + side] = 1.0
    return patches


def occlusion(
    probe: Probe,
    images: tf.Tensor,
    class_index: tf.Tensor,
    patch: float = OCCLUSION_PATCH,
    stride: float = OCCLUSION_STRIDE,
    chunk: int = 32,
):
    """Zeiler & Fergus 2014: the drop of the target logit when a square is set to black, slid
    over the image; each pixel gets the mean drop of the squares that cover it. Costs one forward
    pass per position."""
    _, logits = probe(images)
    logits = tf.cast(logits, tf.float32)
    class_index = resolve_targets(logits, class_index)
    base = _target_logits(logits, class_index)  # (B,)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    patches = occlusion_patches(height, width, patch, stride)
    drops = []
    for start in range(0, len(patches), chunk):
        keep = tf.constant(1.0 - patches[start : start + chunk])  # (c, H, W)
        count = keep.shape[0]
        masked = keep[None, :, :, :, None] * tf.cast(images, tf.float32)[:, None]
        _, out = probe(tf.reshape(masked, (-1, height, width, images.shape[-1])))
        target = _target_logits(tf.cast(out, tf.float32), tf.repeat(class_index, count))
        drops.append(base[:, None] - tf.reshape(target, (batch, count)))
    drop = tf.concat(drops, axis=1)  # (B, P)
    flat = tf.constant(patches.reshape(len(patches), -1))
    covered = tf.constant(np.maximum(patches.sum(axis=0), 1.0).reshape(-1))
    total = tf.matmul(drop, flat) / covered  # (B, H * W): mean drop of the covering squares
    return tf.nn.relu(tf.reshape(total, (batch, height, width))), logits


@functools.cache
def rise_masks(height: int, width: int, count: int = RISE_MASKS) -> np.ndarray:
    """(N, H, W) float32 smooth random masks (Petsiuk et al. 2018): a coarse grid of cells kept
    with probability RISE_KEEP, upsampled bilinearly and shifted by a random fraction of a cell;
    seeded, so every run and every batch uses the same masks."""
    check_constant(count, height, width, f"RISE masks (explain.rise_masks {count})")
    rng = np.random.default_rng(RISE_SEED)
    cell_h, cell_w = -(-height // RISE_CELLS), -(-width // RISE_CELLS)
    grid = (rng.uniform(size=(count, RISE_CELLS, RISE_CELLS)) < RISE_KEEP).astype("float32")
    # numpy, not TensorFlow: the masks are made while the method is traced
    big = zoom(
        grid,
        (1, (RISE_CELLS + 1) * cell_h / RISE_CELLS, (RISE_CELLS + 1) * cell_w / RISE_CELLS),
        order=1,
    )
    shifts = rng.integers(0, [cell_h, cell_w], size=(count, 2))
    return np.stack(
        [big[i, y : y + height, x : x + width] for i, (y, x) in enumerate(shifts)]
    ).astype("float32")


def rise(
    probe: Probe,
    images: tf.Tensor,
    class_index: tf.Tensor,
    masks: int = RISE_MASKS,
    chunk: int = 64,
):
    """Petsiuk et al. 2018: the mean of random masks weighted by the target class's probability
    on the image seen through each, over the keep probability; model-agnostic. Costs one forward
    pass per mask."""
    _, logits = probe(images)
    logits = tf.cast(logits, tf.float32)
    class_index = resolve_targets(logits, class_index)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    masks = rise_masks(height, width, masks)
    scores = []
    for start in range(0, len(masks), chunk):
        part = tf.constant(masks[start : start + chunk])  # (c, H, W)
        count = part.shape[0]
        masked = part[None, :, :, :, None] * tf.cast(images, tf.float32)[:, None]
        _, out = probe(tf.reshape(masked, (-1, height, width, images.shape[-1])))
        probs = _class_probabilities(tf.cast(out, tf.float32), probe.multi_label)
        picked = tf.gather(probs, tf.repeat(class_index, count), axis=1, batch_dims=1)
        scores.append(tf.reshape(picked, (batch, count)))
    weights = tf.concat(scores, axis=1)  # (B, N)
    flat = tf.constant(masks.reshape(len(masks), -1))
    total = tf.matmul(weights, flat) / (len(masks) * RISE_KEEP)
    return tf.reshape(total, (batch, height, width)), logits


def _class_probabilities(logits: tf.Tensor, multi_label: bool = False) -> tf.Tensor:
    """Softmax, or for a single-logit head [1 - sigmoid, sigmoid]; a multi-label model's findings
    each their own sigmoid."""
    if multi_label:
        return tf.sigmoid(logits)
    if logits.shape[-1] == 1:
        p = tf.sigmoid(logits)
        return tf.concat([1 - p, p], axis=-1)
    return tf.nn.softmax(logits, axis=-1)


def _input_gradients(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """The target logit's gradients with respect to the pixels (per target for (B, K) targets,
    from one forward pass), and the logits."""
    with tf.GradientTape(persistent=bool(several_targets(class_index))) as tape:
        tape.watch(images)
        _, logits = probe(images)
        logits = tf.cast(logits, tf.float32)
        targets = _target_columns(logits, class_index)
    grads = _gradients_per_target(tape, targets, images)
    return grads, per_target(logits, class_index)


def saliency(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Simonyan et al. 2014: the magnitude of the target logit's gradient with respect to each
    pixel."""
    grads, logits = _input_gradients(probe, images, class_index)
    return tf.reduce_max(tf.abs(grads), axis=-1), logits


def input_x_gradient(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Shrikumar et al. 2016: pixel value times gradient (magnitude)."""
    grads, logits = _input_gradients(probe, images, class_index)
    return tf.reduce_max(tf.abs(grads * per_target(images, class_index)), axis=-1), logits


def guided_backprop(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Springenberg et al. 2015: the input gradient through ReLUs that pass back only positive
    signal."""
    guided = probe.guided()
    logits = tf.cast(probe(images)[1], tf.float32)
    grads, _ = _input_gradients(guided, images, resolve_targets(logits, class_index))
    return tf.reduce_max(tf.nn.relu(grads), axis=-1), logits


def guided_gradcam(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
    """Selvaraju et al. 2017: guided backpropagation times the Grad-CAM map upsampled to the
    input."""
    cam, logits = METHODS["gradcam"](probe, images, class_index)
    guided, _ = guided_backprop(probe, images, resolve_targets(logits, class_index))
    cam = tf.image.resize(cam[..., None], tf.shape(images)[1:3], method="bilinear")[..., 0]
    return guided * tf.nn.relu(cam), logits


def smoothgrad(
    probe: Probe, images: tf.Tensor, class_index: tf.Tensor, samples: int = 16, noise: float = 0.15
):
    """Smilkov et al. 2017: saliency averaged over noisy copies (noise = 15% of each image's
    range)."""
    logits = tf.cast(probe(images)[1], tf.float32)
    # the clean image's prediction, not each noisy copy's
    class_index = resolve_targets(logits, class_index)
    spread = noise * (
        tf.reduce_max(images, axis=(1, 2, 3), keepdims=True)
        - tf.reduce_min(images, axis=(1, 2, 3), keepdims=True)
    )
    total = tf.zeros(tf.shape(images)[:3])
    for i in range(samples):
        # one draw per sample, the same for every image: an image's map does not depend on its
        # place in the batch
        noisy = images + spread * tf.random.stateless_normal(tf.shape(images)[1:], seed=(i, 0))
        grads, _ = _input_gradients(probe, noisy, class_index)
        total += tf.reduce_max(tf.abs(grads), axis=-1)
    return total / samples, logits


def integrated_gradients(probe: Probe, images: tf.Tensor, class_index: tf.Tensor, steps: int = 32):
    """Sundararajan et al. 2017: (image - black) times the mean gradient along the straight path
    (midpoint rule)."""
    attributions, logits = integrated_gradient_attributions(probe, images, class_index, steps)
    return tf.reduce_max(tf.abs(attributions), axis=-1), logits


def integrated_gradient_attributions(
    probe: Probe, images: tf.Tensor, class_index: tf.Tensor, steps: int = 32
):
    """Signed per-pixel attributions; they sum to about target(image) - target(black)
    (completeness)."""
    logits = tf.cast(probe(images)[1], tf.float32)
    class_index = resolve_targets(logits, class_index)
    total = tf.zeros_like(images)
    for i in range(steps):
        grads, _ = _input_gradients(probe, images * ((i + 0.5) / steps), class_index)
        total += grads
    return images * total / steps, logits


Method = Callable[[Probe, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def _method_of(name: str) -> Method:
    """The catalog entry's function as a method; a combination of the layer's activations and
    gradients gets its forward and backward pass (and keeps its own name and docstring)."""
    spec = METHODS_BY_NAME[name]
    function = globals()[spec.function]
    if not spec.combination:
        return function

    def method(probe: Probe, images: tf.Tensor, class_index: tf.Tensor):
        activations, grads, logits = _activations_and_grads(probe, images, class_index)
        return function(activations, grads), logits

    # its name and paper (not functools.wraps: TensorFlow would bind the combination's signature)
    method.__name__, method.__doc__ = function.__name__, function.__doc__
    return method


METHODS: dict[str, Method] = {spec.name: _method_of(spec.name) for spec in METHOD_SPECS}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown explanation method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def explain_batch(
    probe: Probe,
    images: np.ndarray | tf.Tensor,
    class_index: np.ndarray | None = None,
    method: str = "gradcam",
    pad_to: int | None = None,
) -> Explanation:
    """Maps for a batch of images (B, H, W, C) in the model's input range.

    `class_index` gives the class to explain per image, (B,); None (or -1 for an image) explains
    the predicted class, chosen inside the same forward pass, and -(r + 1) the r-th most probable.
    (B, K) explains K classes per image: the result then holds B * K maps, image-major (image b's
    k-th class at b * K + k). Methods whose catalog entry has `shared_targets` take one forward
    pass and one backward pass per class; a class-blind method computes its map once; the others
    run once per class on a repeated batch. `pad_to` pads a short batch with blank images up to that
    size, so that the last batch of a fold reuses the traced (or XLA-compiled) function instead of
    tracing a new one; the padding is dropped from the result (images do not interact in
    inference).
    """
    return explain_methods(probe, images, class_index, [method], pad_to)[method]


def explain_methods(
    probe: Probe,
    images: np.ndarray | tf.Tensor,
    class_index: np.ndarray | None,
    methods: list[str],
    pad_to: int | None = None,
) -> dict[str, Explanation]:
    """`explain_batch` for several methods at once: those that combine the target layer's
    activations with the gradients there (the catalog's `combination`: Grad-CAM, Grad-CAM++,
    HiResCAM, LayerCAM, XGrad-CAM) share one forward and one backward pass, with the same maps
    as each alone; the others run on their own."""
    images = tf.convert_to_tensor(images, tf.float32)
    count = images.shape[0]
    class_index = np.full(count, -1) if class_index is None else np.asarray(class_index)
    class_index = class_index.astype(np.int32)
    if class_index.shape[0] != count or class_index.ndim not in (1, 2):
        raise CxrError(
            f"targets of shape {class_index.shape} for {count} images: give one target per image "
            "(B,) or K per image (B, K)"
        )
    padding = max(0, (pad_to or 0) - count)
    if padding:
        images = tf.concat([images, tf.zeros((padding, *images.shape[1:]), images.dtype)], axis=0)
        class_index = np.concatenate(
            [class_index, np.full((padding, *class_index.shape[1:]), -1, np.int32)]
        )
    per_image = class_index.shape[1] if class_index.ndim == 2 else 1
    together = [m for m in methods if METHODS_BY_NAME[m].combination]
    found = {}
    try:
        if len(together) > 1:
            raws, logits = _compiled_together(probe, tuple(together))(
                images, tf.constant(class_index)
            )
            asked = class_index.reshape(-1)
            found = {m: (raw, logits, asked) for m, raw in zip(together, raws, strict=True)}
        for method in methods:
            if method not in found:
                found[method] = _run_method(probe, method, images, class_index)
    except CxrError as exc:  # raised while tracing: TensorFlow prefixes its own stack to the text
        raise type(exc)(str(exc).rsplit(f"{type(exc).__name__}: ", 1)[-1].strip()) from None
    count *= per_image  # image-major: the padding's maps come last
    return {m: _explanation(*found[m], count, images.shape[1:3]) for m in methods}


def _explanation(
    raw: tf.Tensor, logits: tf.Tensor, asked: np.ndarray, count: int, size: tuple[int, int]
) -> Explanation:
    """The first `count` raw maps upsampled to the input `size` and normalised to [0, 1], with
    their peaks, the empty ones and the classes they explain."""
    raw, logits, asked = raw[:count], logits[:count], asked[:count]
    raw = tf.cast(raw, tf.float32)
    peak = tf.reduce_max(raw, axis=(1, 2))
    upsampled = tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
    # bilinear weights are non-negative; this only removes float round-off
    upsampled = tf.nn.relu(upsampled)
    top = tf.reduce_max(upsampled, axis=(1, 2), keepdims=True)
    maps = tf.math.divide_no_nan(upsampled, top)  # an all-zero map stays zero, never NaN
    logits = tf.cast(logits, tf.float32)
    return Explanation(
        maps=maps.numpy(),
        raw_maps=raw.numpy(),
        raw_peak=peak.numpy(),
        empty=(peak <= EMPTY_PEAK).numpy(),
        logits=logits.numpy(),
        class_index=resolve_targets(logits, tf.constant(asked)).numpy(),
    )


def _run_method(
    probe: Probe, method: str, images: tf.Tensor, class_index: np.ndarray
) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
    """(raw maps, logits, the target codes they answer), one per image, or per image and class,
    image-major, for (B, K) targets."""
    spec = METHODS_BY_NAME[method]
    function = _compiled(probe, method)
    if class_index.ndim == 1 or spec.shared_targets:
        raw, logits = function(images, tf.constant(class_index))
        return raw, logits, class_index.reshape(-1)
    per_image = class_index.shape[1]
    if not spec.class_specific:  # the same map whatever the class: computed once
        raw, logits = function(images, tf.constant(np.full(len(class_index), -1, np.int32)))
        return (
            tf.repeat(raw, per_image, axis=0),
            tf.repeat(logits, per_image, axis=0),
            class_index.reshape(-1),
        )
    raw, logits = function(tf.repeat(images, per_image, axis=0), tf.constant(class_index.ravel()))
    return raw, logits, class_index.reshape(-1)


def _compiled_together(probe: Probe, methods: tuple[str, ...]) -> Callable:
    """One traced function for several combination methods (kept on the probe): the activations
    and gradients once, each method's combination of them."""
    if methods not in probe.compiled:
        combine = [globals()[METHODS_BY_NAME[m].function] for m in methods]

        def together(images: tf.Tensor, class_index: tf.Tensor):
            activations, grads, logits = _activations_and_grads(probe, images, class_index)
            return [function(activations, grads) for function in combine], logits

        probe.compiled[methods] = tf.function(
            together, reduce_retracing=True, jit_compile=probe.jit_compile, autograph=False
        )
    return probe.compiled[methods]


def _compiled(probe: Probe, method: str) -> Callable:
    """One traced function per probe and method (kept on the probe); retraced only for a new batch
    shape.

    With `probe.jit_compile` the function is compiled by XLA (one compilation per batch shape, hence
    `pad_to`).
    """
    if method not in probe.compiled:
        function = get_method(method)
        if METHODS_BY_NAME[method].guided:
            probe.guided()  # cloning copies weights eagerly: do it before tracing
        # a partial, not a lambda: TensorFlow's retracing warning then counts each probe's function
        # on its own,
        # instead of adding up the first traces of every probe made from the same lambda (as the
        # audit makes several)
        probe.compiled[method] = tf.function(
            functools.partial(function, probe, **probe.parameters.get(method, {})),
            reduce_retracing=True,
            jit_compile=probe.jit_compile,
            # the methods branch on Python values only: tracing them as written skips AutoGraph's
            # conversion (0.2 s of a cold `cxr explain`)
            autograph=False,
        )
    return probe.compiled[method]
