"""Every explanation method cxr has, one entry each, holding every property of the method.

The config's allowed values, the CLI's help, the engine's function table and which methods take a
target layer all come from here (a test checks that docs/explain.md names each one), so adding a
method is one function in cxr.explain.methods and one line below. This module imports nothing
heavy: the config and the CLI read it before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
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

    @property
    def cost(self) -> str:
        """Its cost a batch, as the docs' methods table says it."""
        return f"{self.passes} per {self.per}" if self.per else self.passes


METHOD_SPECS = (
    MethodSpec(
        "gradcam",
        "gradcam",
        True,
        True,
        "1 backward pass",
        "Selvaraju et al. 2017",
        shared_targets=True,
    ),
    MethodSpec(
        "gradcam++",
        "gradcam_plus_plus",
        True,
        True,
        "1 backward pass",
        "Chattopadhyay et al. 2018",
        shared_targets=True,
    ),
    MethodSpec(
        "scorecam", "scorecam", True, False, "1 forward pass", "Wang et al. 2020", per="channel"
    ),
    MethodSpec(
        "hirescam",
        "hirescam",
        True,
        True,
        "1 backward pass",
        "Draelos & Carin 2020",
        shared_targets=True,
    ),
    MethodSpec(
        "ablationcam",
        "ablationcam",
        True,
        False,
        "1 pass of the model's head",
        "Desai & Ramaswamy 2020",
        per="channel",
    ),
    MethodSpec(
        "layercam",
        "layercam",
        True,
        True,
        "1 backward pass",
        "Jiang et al. 2021",
        shared_targets=True,
    ),
    MethodSpec(
        "xgradcam", "xgradcam", True, True, "1 backward pass", "Fu et al. 2020", shared_targets=True
    ),
    MethodSpec(
        "eigencam",
        "eigencam",
        True,
        False,
        "1 forward pass and an SVD per image",
        "Muhammad & Yeasin 2020",
        class_specific=False,
    ),
    MethodSpec(
        "occlusion",
        "occlusion",
        False,
        False,
        "1 forward pass",
        "Zeiler & Fergus 2014",
        parameters=(("patch", "occlusion_patch"), ("stride", "occlusion_stride")),
        per="position",
    ),
    MethodSpec(
        "rise",
        "rise",
        False,
        False,
        "1 forward pass",
        "Petsiuk et al. 2018",
        parameters=(("masks", "rise_masks"),),
        per="mask",
    ),
    MethodSpec(
        "saliency",
        "saliency",
        False,
        True,
        "1 backward pass",
        "Simonyan et al. 2014",
        shared_targets=True,
    ),
    MethodSpec(
        "smoothgrad",
        "smoothgrad",
        False,
        True,
        "1 backward pass",
        "Smilkov et al. 2017",
        per="sample",
    ),
    MethodSpec(
        "integrated_gradients",
        "integrated_gradients",
        False,
        True,
        "1 backward pass",
        "Sundararajan et al. 2017",
        per="step",
    ),
    MethodSpec(
        "input_x_gradient",
        "input_x_gradient",
        False,
        True,
        "1 backward pass",
        "Shrikumar et al. 2016",
        shared_targets=True,
    ),
    MethodSpec(
        "guided_backprop",
        "guided_backprop",
        False,
        True,
        "1 backward pass",
        "Springenberg et al. 2015",
        guided=True,
    ),
    MethodSpec(
        "guided_gradcam",
        "guided_gradcam",
        False,
        True,
        "2 backward passes",
        "Selvaraju et al. 2017",
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
