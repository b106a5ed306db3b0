"""An independent curvature measurement during training: the ``sharpness`` callback.

Every ``EVERY`` steps (at an evaluation) it computes, on a fixed held-out batch (the first ``ROWS``
sequences of the last validation batch, which no lr schedule ever probes), the Hessian's largest eigenvalue
by Lanczos to relative tolerance ``TOL`` (:func:`geoformer.train.curvature.lanczos_top_eigenvalue`) and the
gradient norm, and logs ``sharpness`` (lambda_max), ``sharpness_kappa`` (|lambda_max| / ||g||^2, the homotopy
lr's own curvature definition), ``sharpness_residual`` and ``sharpness_matvecs``. It neither touches
``.grad`` nor consumes any random stream the training uses, so a run with it trains exactly as without it.
"""

from __future__ import annotations

from typing import Any

from geoformer.models.gpt import eval_mode
from geoformer.train.callbacks import Callback, register_callback
from geoformer.train.curvature import _norm, lanczos_top_eigenvalue, loss_and_grad


@register_callback("sharpness")
class Sharpness(Callback):
    EVERY = 100  # steps between measurements (each costs ~50-100 HVPs on the probe batch)
    ROWS = 4
    TOL = 1e-2

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def on_eval(self, trainer, step: int, record: dict[str, Any]) -> None:
        if step % self.EVERY:
            return
        x, y = trainer.val_batches[-1]
        x, y = x[: self.ROWS].to(trainer.device), y[: self.ROWS].to(trainer.device)
        model = trainer.raw_model
        params = [p for p in model.parameters() if p.requires_grad]
        with eval_mode(model):
            _, grads = loss_and_grad(lambda: model(x, y)[1], params)
            res = lanczos_top_eigenvalue(grads, params, which="LA", tol=self.TOL, seed=step)
        g = float(_norm([gr.detach() for gr in grads]))
        lam = res["lambda"]
        record.update(
            sharpness=lam,
            sharpness_residual=res["residual"],
            sharpness_matvecs=res["matvecs"],
            sharpness_grad_norm=g,
            sharpness_kappa=abs(lam) / g**2 if g > 0 else 0.0,
        )
