"""A probe runs a model in inference mode and returns (target-layer activations, logits).

Flat functional models (all of cxr's) get one two-output Keras model. A model
whose target layer sits inside a nested backbone — the common transfer-learning
shape `Sequential([VGG16(...), pooling, Dense])`, which gives "Graph
disconnected" when one asks for an inner layer's output — is split into the
layers before the backbone, the backbone (with a second output at the target
layer) and the head layers after it, called in turn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import tensorflow as tf

from cxr.errors import ConfigError, CxrError

POOLING_TYPES = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)


class Probe:
    """Callable: images -> (activations (B, h, w, K), logits (B, C)), training=False."""

    def __init__(
        self,
        model: keras.Model,
        layer_name: str,
        call: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
        jit_compile: bool = False,
    ) -> None:
        self.model = model
        self.layer_name = layer_name
        self.jit_compile = jit_compile  # trace the methods with XLA
        self._call = call
        # traced methods, kept with the probe they belong to
        self.compiled: dict[str | tuple[str, ...], Callable] = {}  # by method (or methods)
        # per method, the keyword arguments its function is traced with (explain.occlusion_*, ...)
        self.parameters: dict[str, dict] = {}
        # the model's outputs are independent findings (a sigmoid each), not one softmax: the
        # methods that weigh by a probability (Score-CAM, RISE) take the finding's own
        self.multi_label = False
        self._guided: Probe | None = None
        self._head: keras.Model | None = None

    def head(self) -> keras.Model:
        """The part of the model from the target layer's output to the logits (built once), for
        methods that change the activations (AblationCAM); a flat model only."""
        if self._head is None:
            if any(isinstance(layer, keras.Model) for layer in self.model.layers):
                raise CxrError(
                    "this method runs the model on from the target layer, which needs a flat model "
                    "(no nested backbone)"
                )
            try:
                self._head = keras.Model(
                    self.model.get_layer(self.layer_name).output, self.model.output
                )
            except ValueError as exc:  # the logits need more than the target layer (a skip)
                raise ConfigError(
                    f"the logits of {self.model.name!r} depend on more than layer "
                    f"{self.layer_name!r} ({exc}); choose a later --layer"
                ) from None
        return self._head

    @functools.cached_property
    def split(self) -> tuple[keras.Model, keras.Model] | None:
        """(images -> target-layer activations, activations -> logits) for a flat model whose
        logits depend on the target layer alone; None otherwise (a nested backbone, a skip past the
        layer). Differentiating the head alone records only its few operations, where a gradient
        tape around the whole model recorded every layer: 0.1 s less tracing per method."""
        try:
            head = self.head()
        except CxrError:
            return None
        layer = self.model.get_layer(self.layer_name)
        return keras.Model(self.model.input, layer.output), head

    def guided(self) -> Probe:
        """The same probe on a copy of the model whose ReLUs pass back only positive gradients
        (built once)."""
        if self._guided is None:
            if any(isinstance(layer, keras.Model) for layer in self.model.layers):
                raise CxrError("guided backpropagation needs a flat model (no nested backbone)")
            copy = keras.models.clone_model(self.model, clone_function=_guided_layer)
            copy.set_weights(self.model.get_weights())
            self._guided = make_probe(
                copy,
                self.layer_name,
                jit_compile=self.jit_compile,
                parameters=self.parameters,
                multi_label=self.multi_label,
            )
        return self._guided

    def set_weights(self, weights: list) -> None:
        """New values for the model's (and the guided copy's) variables; the traced methods read
        them, no retracing."""
        self.model.set_weights(weights)
        if self._guided is not None:
            self._guided.set_weights(weights)

    def __call__(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """In the model's own dtype: a float16 model's activations are cast only after
        differentiation."""
        return self._call(images)


def find_target_layer(model: keras.Model) -> str:
    """The last layer with a 4-D (spatial) output before the first global-pooling or flatten
    layer."""
    candidate = None
    for layer in model.layers:
        if isinstance(layer, POOLING_TYPES):
            break
        if isinstance(layer, keras.Model):
            candidate = layer.name if len(layer.output.shape) == 4 else candidate
            continue
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4:
            candidate = layer.name
    if candidate is None:
        raise CxrError(
            f"model {model.name!r} has no layer with a spatial (4-D) output before its pooling: "
            "give the layer by name"
        )
    return candidate


def make_probe(
    model: keras.Model,
    layer_name: str | None = None,
    jit_compile: bool = False,
    parameters: dict[str, dict] | None = None,
    multi_label: bool = False,
) -> Probe:
    """Probe `model` at `layer_name` (found automatically when None), flat or nested; `jit_compile`
    traces with XLA; `parameters` (method -> keyword arguments) tune the methods that take any;
    `multi_label` says the logits are independent findings (data.multi_label)."""
    probe = _make_probe(model, layer_name, jit_compile)
    probe.parameters = dict(parameters or {})
    probe.multi_label = multi_label
    return probe


def _make_probe(model: keras.Model, layer_name: str | None, jit_compile: bool) -> Probe:
    name = layer_name or find_target_layer(model)
    top = {layer.name: layer for layer in model.layers}
    if name in top:
        layer = top[name]
        # a nested backbone named as a whole: its output is the target
        if isinstance(layer, keras.Model):
            return _nested_probe(model, layer, layer.layers[-1].name, jit_compile)
        if len(layer.output.shape) != 4:
            raise CxrError(
                f"layer {name!r} has output shape {tuple(layer.output.shape)}; Grad-CAM needs a "
                "spatial (4-D) layer"
            )
        both = keras.Model(model.input, [layer.output, model.output])
        return Probe(model, name, lambda images: tuple(both(images, training=False)), jit_compile)
    for sub in (layer for layer in model.layers if isinstance(layer, keras.Model)):
        if name in {inner.name for inner in sub.layers}:
            return _nested_probe(model, sub, name, jit_compile)
    close = [layer.name for layer in model.layers if len(getattr(layer.output, "shape", ())) == 4][
        -5:
    ]
    raise CxrError(
        f"layer {name!r} not found in model {model.name!r}; spatial layers near the end: "
        f"{', '.join(close)}"
    )


def _nested_probe(
    model: keras.Model, backbone: keras.Model, name: str, jit_compile: bool = False
) -> Probe:
    """Before-layers -> backbone (with the target layer as a second output) -> head layers, in
    order."""
    if not isinstance(model, keras.Sequential):
        raise CxrError(
            f"layer {name!r} is inside the nested model {backbone.name!r} of a functional model; "
            "explaining that needs a Sequential outer model, or a flat one (keras.applications "
            "with input_tensor=)"
        )
    inner = backbone.get_layer(name)
    if len(inner.output.shape) != 4:
        raise CxrError(
            f"layer {name!r} has output shape {tuple(inner.output.shape)}; Grad-CAM needs a "
            "spatial (4-D) layer"
        )
    features = keras.Model(backbone.input, [inner.output, backbone.output])
    position = model.layers.index(backbone)
    before, after = model.layers[:position], model.layers[position + 1 :]

    def call(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = images
        for layer in before:
            x = layer(x, training=False)
        activations, x = features(x, training=False)
        for layer in after:
            x = layer(x, training=False)
        return activations, x

    return Probe(model, name, call, jit_compile)


@tf.custom_gradient
def guided_relu(x: tf.Tensor):
    """ReLU forward; backward passes a gradient only where both it and the input are positive
    (Springenberg 2015)."""

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)

    return tf.nn.relu(x), grad


def _guided_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Clone a layer, swapping plain ReLUs (layers or activations) for the guided one."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.ReLU):
        if (
            config.get("max_value") is not None
            or config.get("negative_slope")
            or config.get("threshold")
        ):
            raise CxrError(
                f"guided backpropagation supports plain ReLUs only; layer {layer.name!r} is a "
                "clipped or leaky one"
            )
        return keras.layers.Activation(guided_relu, name=layer.name)
    if config.get("activation") == "relu":
        config["activation"] = guided_relu
    return layer.__class__.from_config(config)


COARSE = 8  # a target layer's map of this many cells a side or fewer blurs a finding over the film


def spatial_layers(model: keras.Model) -> list[tuple[str, tuple[int, int]]]:
    """(name, (h, w)) of every layer of a flat model, or of its nested backbone, with a spatial
    (4-D) output of known size, in order."""
    layers = []
    for layer in model.layers:
        inner = layer.layers if isinstance(layer, keras.Model) else [layer]
        for sub in inner:
            shape = getattr(sub.output, "shape", ()) if hasattr(sub, "output") else ()
            if len(shape) == 4 and shape[1] and shape[2]:
                layers.append((sub.name, (int(shape[1]), int(shape[2]))))
    return layers


def coarse_map_note(model: keras.Model, layer: str) -> str | None:
    """A note when `layer`'s map is COARSE cells a side or fewer, naming the last few layers with
    finer maps that `--layer` can take; None when the map is fine enough."""
    sizes = dict(spatial_layers(model))
    if layer not in sizes or max(sizes[layer]) > COARSE:
        return None
    h, w = sizes[layer]
    finer = [f"{name} ({a}x{b})" for name, (a, b) in spatial_layers(model) if a * b > h * w][-3:]
    hint = f"; finer maps: --layer {', '.join(finer)}" if finer else ""
    return (
        f"layer {layer!r} gives {h}x{w} maps: each cell covers 1/{h * w} of the film, so a map "
        f"can only say roughly where{hint}"
    )
