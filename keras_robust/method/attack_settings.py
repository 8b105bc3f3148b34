"""`AttackSettings`: how one run of Algorithm 1 attacks (docs/method.md §4).

Imports nothing heavy, so the command line checks attack flags before
TensorFlow loads.
"""

import dataclasses
import numbers
import warnings

from keras_robust.common.validation import check_choice, check_momentum, check_range, check_steps

MODES = ("bounded", "l2min", "btr")


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """The settings of one run of the attack routine, checked when made.

    Step `i` of `N` has size `ρ·o·(N − i) / (N(N + 1)/2)`, so the steps sum to
    `ρ·o`; each moves δ along the RMSE-normalised gradient of the
    cross-entropy, away from the label or, `targeted`, toward it.

    Example:

    >>> settings = AttackSettings(rho=0.1, steps=35, overshoot=5.0, targeted=True)
    >>> x_adv = keras_robust.attack(model, images, targets, settings)

    Args:
        rho: Budget ρ > 0, an RMSE in pixel units. A tensor (one per example,
            or a training step's value) is checked where it is made.
        steps: Number of steps N >= 1; inside a graph also an integer tensor,
            one N per example.
        overshoot: Overshoot o >= 1; the steps sum to `rho * overshoot`.
        mode: `"bounded"` (stop moving once RMSE(δ) >= ρ), `"l2min"` (once
            the prediction leaves the label) or `"btr"` (once the label's
            probability is at most 1/K).
        targeted: Descend the cross-entropy toward the labels, as adversarial
            explanations do (docs/method.md §5), instead of ascending it.
        momentum: Momentum μ in [0, 1) on the normalised direction.
        half_and_half: Attack each example with probability 0.5 (the
            half-and-half mask, one draw per call, before the steps).
        training: Run the model in training mode, as adversarial training does
            (docs/method.md §3). Explanation and ARA use inference mode.
        clip_range: Optional `(low, high)` to keep `x + δ` inside; the
            reference does not clip.
    """

    rho: float
    steps: int
    overshoot: float = 1.0
    mode: str = "bounded"
    targeted: bool = False
    momentum: float = 0.0
    half_and_half: bool = False
    training: bool = False
    clip_range: tuple = None

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        if not _is_tensor(self.steps):
            check_steps(self.steps)
        for name, low, strict in (("rho", 0.0, True), ("overshoot", 1.0, False)):
            if not _is_tensor(getattr(self, name)):
                check_range(name, getattr(self, name), low=low, strict=strict)
        check_momentum(self.momentum)
        if self.clip_range is not None:
            if not (len(self.clip_range) == 2 and self.clip_range[0] < self.clip_range[1]):
                raise ValueError(
                    f"`clip_range` must be (low, high) with low < high. Received: clip_range={self.clip_range!r}"
                )
            object.__setattr__(self, "clip_range", tuple(map(float, self.clip_range)))

    @classmethod
    def resolve(cls, settings=None, **options):
        """`settings`, or the settings its fields given as keywords describe.

        `explain=True`, the keyword's earlier name, still means `targeted=True`.
        """
        if "explain" in options:
            warnings.warn("`explain=` is now `targeted=`", DeprecationWarning, stacklevel=3)
            options["targeted"] = options.pop("explain")
        if settings is None:
            unknown = set(options) - {field.name for field in dataclasses.fields(cls)}
            if unknown:
                raise TypeError(f"Unknown attack settings {sorted(unknown)}. Received: {sorted(options)}")
            return cls(**options)
        if not isinstance(settings, cls):
            raise TypeError(f"`settings` must be an AttackSettings. Received: settings={settings!r}")
        if options:
            raise TypeError(f"Give an AttackSettings or its fields as keywords, not both. Received: {sorted(options)}")
        return settings

    @property
    def sanity_check_by_default(self):
        """Whether a run checks the criterion by step ⌊N/2⌋ unless told (docs/method.md §4):
        for explanations and the `l2min`/`btr` modes, outside training."""
        return (self.targeted or self.mode != "bounded") and not self.training

    def with_budget(self, rho, overshoot):
        """These settings with another budget and overshoot (tensors inside a compiled loop)."""
        return dataclasses.replace(self, rho=rho, overshoot=overshoot)

    def loop_key(self):
        """What a compiled loop is specialised on: every field but the budget and overshoot."""
        return tuple((field.name, getattr(self, field.name)) for field in dataclasses.fields(self)
                     if field.name not in ("rho", "overshoot"))


def _is_tensor(value):
    """A tensor or array, checked where it is made, rather than a Python or NumPy number."""
    return hasattr(value, "dtype") and not isinstance(value, numbers.Number)
