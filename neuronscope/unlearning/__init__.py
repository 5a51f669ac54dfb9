"""Unlearning: one training loop on the hooked model, one loss per method (SPEC §9).

Methods (paper §6.1, App. B.2): GA, GD, DPO, NPO, RMU, KLUE and SSIUU (paper §5, Eq. 3).

    from neuronscope.unlearning import UnlearningConfig, unlearn
    result = unlearn(model, splits.forget, splits.retain, UnlearningConfig(method="ssiuu", lr=5e-5))

Modules: :mod:`.config` (options), :mod:`.losses` (GA/GD/DPO/NPO/RMU formulas and method
classes), :mod:`.klue` (KLUE localisation, our documented reading), :mod:`.ssiuu` (Eq. 3),
:mod:`.trainer` (the loop, checkpoints, :func:`unlearn`, :func:`finetune`), :mod:`.search`
(learning-rate search, λ sweep).
"""

from neuronscope.unlearning.config import LAMBDAS, METHOD_NAMES, RunConfig, UnlearningConfig, load_run_config
from neuronscope.unlearning.search import DEFAULT_LRS, lambda_sweep, lr_search
from neuronscope.unlearning.trainer import METHODS, UnlearningResult, finetune, unlearn

__all__ = [
    "UnlearningConfig",
    "UnlearningResult",
    "RunConfig",
    "unlearn",
    "finetune",
    "lr_search",
    "lambda_sweep",
    "load_run_config",
    "METHODS",
    "METHOD_NAMES",
    "LAMBDAS",
    "DEFAULT_LRS",
]
