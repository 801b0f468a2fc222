"""Every explanation method cxr has, one entry each, holding every property of the method.

The config's allowed values, the CLI's help, the engine's function table and which methods take a
target layer all come from here (a test checks that docs/explain.md names each one), so adding a
method is one function in cxr.explain.methods and one line below. This module imports nothing
heavy: the config and the CLI read it before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    name: str  # what --method and explain.method take
    function: str  # its function in cxr.explain.methods
    layer: bool  # explains a target layer's channels (else the input pixels)
    gradients: bool  # needs the target logit's gradients (else forward passes only)
    passes: str  # what one batch of images costs (once, or once per `per`)
    paper: str
    guided: bool = False  # runs on the copy whose ReLUs pass back only positive gradients
    class_specific: bool = True  # False: the same map whatever class is asked for
    # several classes per image share one forward pass, with one backward pass per class (else the
    # method runs once per class)
    shared_targets: bool = False
    # (the function's keyword, the explain config key that sets it)
    parameters: tuple[tuple[str, str], ...] = ()
    # what the passes repeat for (channel, mask, ...): the method costs many times inference;
    # empty for a fixed number of passes a batch
    per: str = ""
    # the map combines the target layer's activations with the target's gradients there (its
    # function takes those two): methods like it explain a batch together from one forward and
    # one backward pass (cxr.explain.methods.explain_methods)
    combination: bool = False

    @property
    def cost(self) -> str:
        """Its cost a batch, as the docs' methods table says it."""
        return f"{self.passes} per {self.per}" if self.per else self.passes


METHOD_SPECS = (
    MethodSpec(
        name="gradcam",
        function="gradcam",
        layer=True,
        gradients=True,
        passes="1 backward pass",
        paper="Selvaraju et al. 2017",
        shared_targets=True,
        combination=True,
    ),
    MethodSpec(
        name="gradcam++",
        function="gradcam_plus_plus",
        layer=True,
        gradients=True,
        passes="1 backward pass",
        paper="Chattopadhyay et al. 2018",
        shared_targets=True,
        combination=True,
    ),
    MethodSpec(
        name="scorecam",
        function="scorecam",
        layer=True,
        gradients=False,
        passes="1 forward pass",
        paper="Wang et al. 2020",
        per="channel",
    ),
    MethodSpec(
        name="hirescam",
        function="hirescam",
        layer=True,
        gradients=True,
        passes="1 backward pass",
        paper="Draelos & Carin 2020",
        shared_targets=True,
        combination=True,
    ),
    MethodSpec(
        name="ablationcam",
        function="ablationcam",
        layer=True,
        gradients=False,
        passes="1 pass of the model's head",
        paper="Desai & Ramaswamy 2020",
        per="channel",
    ),
    MethodSpec(
        name="layercam",
        function="layercam",
        layer=True,
        gradients=True,
        passes="1 backward pass",
        paper="Jiang et al. 2021",
        shared_targets=True,
        combination=True,
    ),
    MethodSpec(
        name="xgradcam",
        function="xgradcam",
        layer=True,
        gradients=True,
        passes="1 backward pass",
        paper="Fu et al. 2020",
        shared_targets=True,
        combination=True,
    ),
    MethodSpec(
        name="eigencam",
        function="eigencam",
        layer=True,
        gradients=False,
        passes="1 forward pass and an SVD per image",
        paper="Muhammad & Yeasin 2020",
        class_specific=False,
    ),
    MethodSpec(
        name="occlusion",
        function="occlusion",
        layer=False,
        gradients=False,
        passes="1 forward pass",
        paper="Zeiler & Fergus 2014",
        parameters=(("patch", "occlusion_patch"), ("stride", "occlusion_stride")),
        per="position",
    ),
    MethodSpec(
        name="rise",
        function="rise",
        layer=False,
        gradients=False,
        passes="1 forward pass",
        paper="Petsiuk et al. 2018",
        parameters=(("masks", "rise_masks"),),
        per="mask",
    ),
    MethodSpec(
        name="saliency",
        function="saliency",
        layer=False,
        gradients=True,
        passes="1 backward pass",
        paper="Simonyan et al. 2014",
        shared_targets=True,
    ),
    MethodSpec(
        name="smoothgrad",
        function="smoothgrad",
        layer=False,
        gradients=True,
        passes="1 backward pass",
        paper="Smilkov et al. 2017",
        per="sample",
    ),
    MethodSpec(
        name="integrated_gradients",
        function="integrated_gradients",
        layer=False,
        gradients=True,
        passes="1 backward pass",
        paper="Sundararajan et al. 2017",
        per="step",
    ),
    MethodSpec(
        name="input_x_gradient",
        function="input_x_gradient",
        layer=False,
        gradients=True,
        passes="1 backward pass",
        paper="Shrikumar et al. 2016",
        shared_targets=True,
    ),
    MethodSpec(
        name="guided_backprop",
        function="guided_backprop",
        layer=False,
        gradients=True,
        passes="1 backward pass",
        paper="Springenberg et al. 2015",
        guided=True,
    ),
    MethodSpec(
        name="guided_gradcam",
        function="guided_gradcam",
        layer=False,
        gradients=True,
        passes="2 backward passes",
        paper="Selvaraju et al. 2017",
        guided=True,
    ),
)
METHODS_BY_NAME = {spec.name: spec for spec in METHOD_SPECS}
METHOD_NAMES = tuple(METHODS_BY_NAME)
LAYER_METHODS = tuple(spec.name for spec in METHOD_SPECS if spec.layer)


def method_parameters(explain: object) -> dict[str, dict]:
    """Per method that takes any, its keyword arguments from the explain config section."""
    return {
        spec.name: {arg: getattr(explain, key) for arg, key in spec.parameters}
        for spec in METHOD_SPECS
        if spec.parameters
    }


def methods_markdown() -> str:
    """The methods table of docs/explain.md, made from the entries (a test checks the page)."""
    rows = [
        "| method | explains | needs gradients | cost per batch | several classes per image "
        "| paper |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in METHOD_SPECS:
        explains = "a target layer" if spec.layer else "the input pixels"
        if spec.guided:
            explains += " (guided ReLUs)"
        if not spec.class_specific:
            explains += "; the same map for every class"
        if spec.parameters:
            explains += "; set by " + ", ".join(f"`explain.{key}`" for _, key in spec.parameters)
        gradients = "yes" if spec.gradients else "no"
        several = (
            "one forward pass, one backward pass per class"
            if spec.shared_targets
            else "one map for all"
            if not spec.class_specific
            else "one run per class"
        )
        rows.append(
            f"| `{spec.name}` | {explains} | {gradients} | {spec.cost} | {several} | {spec.paper} |"
        )
    return "\n".join(rows)
