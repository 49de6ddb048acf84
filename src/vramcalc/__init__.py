"""vramcalc: GPU memory of LLM fine-tuning, per component, with a fit verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Breakdown", "GpuSpec", "ModelSpec", "TrainingSpec", "Verdict", "__version__", "estimate", "fit"]

if TYPE_CHECKING:
    from vramcalc.core.fit import Verdict, fit
    from vramcalc.core.memory import Breakdown, estimate
    from vramcalc.core.specs import GpuSpec, ModelSpec, TrainingSpec


def __getattr__(name: str) -> Any:
    # Lazy re-exports: `vramcalc --version` and the CLI's start-up do not pay for pydantic.
    if name in ("estimate", "Breakdown"):
        from vramcalc.core import memory

        return getattr(memory, name)
    if name in ("fit", "Verdict"):
        from vramcalc.core import fit as fit_module

        return getattr(fit_module, name)
    if name in ("ModelSpec", "GpuSpec", "TrainingSpec"):
        from vramcalc.core import specs

        return getattr(specs, name)
    raise AttributeError(name)
