"""The batched optimiser behind ``fit_logistic_batched``: many L2 logistic regressions at once.

Every (layer, fold) problem keeps its own L-BFGS memory, step scale and Armijo line search, so
problems do not slow each other down; they share the passes over their layer's rows. What
makes it converge in a few dozen iterations on badly conditioned residual-stream activations,
where L-BFGS preconditioned by the Hessian at zero alone takes hundreds, and keeps those
iterations cheap:

- Curvature preconditioning (``probing.curvature``): the initial inverse Hessian is the
  Hessian at zero at first, and from iteration ``_REFRESH_AT`` each fold's own lumped Hessian
  at its iterate, when the probabilities say which rows are still uncertain. Its scale is the
  step-based ``s.M s / s.y``, which needs no extra product with the inverse.
- Mixed precision (``probing.objective``): iterations use float32 row products; once all of a
  layer's problems have stopped there, the layer recomputes its logits, objective and
  gradient on float64 rows and carries on there, so the stopping test is float64's.
- The logits are carried along the steps (``z + t d``), so line-search trials need no row
  products; a pass covers only the layers with a problem still running, and a repeated trial
  only the layers with a problem still searching.

None of this changes the problem or its minimiser: every problem stops when the max absolute
gradient of its float64 mean-scaled objective is at most ``tol`` (or float64 sees no more
progress), as scikit-learn's lbfgs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from probes.probing.curvature import Preconditioner
from probes.probing.objective import Problems

_HISTORY = 10  # L-BFGS memory, as scikit-learn's default (maxcor=10)
_MAX_BACKTRACKS = 30
_ARMIJO_C1 = 1e-4
_FTOL = 64 * torch.finfo(torch.float64).eps  # scikit-learn's L-BFGS-B ftol
_REFRESH_AT = 6  # the iteration at which every fold gets its own curvature preconditioner


@dataclass
class _History:
    """L-BFGS memory of every problem: a ring of (s, y) pairs; unused slots have rho = 0."""

    S: Tensor  # [m, P, D]
    Y: Tensor  # [m, P, D]
    rho: Tensor  # [m, P]
    gamma: Tensor  # [P]: scale of the preconditioned initial inverse Hessian
    slot: int = 0

    @classmethod
    def empty(cls, P: int, D: int) -> _History:
        zeros = torch.zeros(_HISTORY, P, D, dtype=torch.float64)
        rho = torch.zeros(_HISTORY, P, dtype=torch.float64)
        return cls(zeros, zeros.clone(), rho, torch.ones(P, dtype=torch.float64))

    def direction(self, g: Tensor, precondition: Callable[[Tensor], Tensor]) -> Tensor:
        """Two-loop recursion: minus the approximate inverse Hessian times ``g`` [P, D]."""
        q = g.clone()
        alphas = torch.zeros_like(self.rho)
        used = [i for i in range(_HISTORY) if bool(self.rho[i].any())]  # empty after a reset
        newest_first = sorted(used, key=lambda i: (self.slot - 1 - i) % _HISTORY)
        for i in newest_first:
            alphas[i] = self.rho[i] * torch.linalg.vecdot(self.S[i], q)
            q.sub_(alphas[i, :, None] * self.Y[i])
        r = self.gamma[:, None] * precondition(q)
        for i in reversed(newest_first):
            beta = self.rho[i] * torch.linalg.vecdot(self.Y[i], r)
            r.add_((alphas[i] - beta)[:, None] * self.S[i])
        return -r

    def forget(self, which: Tensor) -> None:
        self.rho[:, which] = 0.0
        self.gamma[which] = 1.0

    def push(self, s: Tensor, y: Tensor, sms: Tensor) -> None:
        """Store the pairs whose curvature is positive (the others get an empty slot) and
        rescale the preconditioner by ``s.M s / s.y`` (``sms``: its matrix along ``s``)."""
        sy = (s * y).sum(1)
        ok = sy > 1e-12 * y.norm(dim=1) * s.norm(dim=1)
        self.S[self.slot] = torch.where(ok[:, None], s, 0.0)
        self.Y[self.slot] = torch.where(ok[:, None], y, 0.0)
        safe = sy.where(ok, torch.ones_like(sy))
        self.rho[self.slot] = torch.where(ok, 1.0 / safe, 0.0)
        self.gamma = torch.where(ok & (sms > 0), sms / safe, self.gamma)
        self.slot = (self.slot + 1) % _HISTORY


def _line_search(
    problems: Problems,
    z: Float[Tensor, "layers n folds k"],
    zd: Float[Tensor, "layers n folds k"],
    theta: Float[Tensor, "layers folds k d1"],
    direction: Float[Tensor, "layers folds k d1"],
    f: Float[Tensor, "layers folds"],
    slope: Float[Tensor, "layers folds"],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-problem Armijo backtracking from a unit step; returns the steps, the objective
    there, the problems that found no step, and the logits and log partition function at
    the steps (for the problems that moved).

    The logits are linear in the step (``z + step * zd``), so a trial costs no row products,
    its labelled term is linear too, and after the first trial only the layers with a
    problem still searching are evaluated.
    """
    pending = slope < 0
    step = pending.to(f.dtype)
    f_new = f.clone()
    base, rate = problems.labelled(z), problems.labelled(zd)
    z_new = torch.empty_like(z)
    lse_new = torch.empty(z.shape[:-1], dtype=z.dtype)
    layers: Tensor | slice = slice(None)
    for _ in range(_MAX_BACKTRACKS):
        at_step = step[layers]
        trial_z = z[layers] + at_step[:, None, :, None] * zd[layers]
        trial, lse = problems.partition(trial_z)
        trial = trial - base[layers] - at_step * rate[layers]
        trial += problems.penalty(theta[layers] + at_step[..., None, None] * direction[layers])
        wait = pending[layers]
        ok = wait & (trial <= f[layers] + _ARMIJO_C1 * at_step * slope[layers])
        f_new[layers] = torch.where(ok, trial, f_new[layers])
        if isinstance(layers, slice):  # the first trial: every layer
            z_new, lse_new = trial_z, lse
        else:
            z_new[layers] = torch.where(ok[:, None, :, None], trial_z, z_new[layers])
            lse_new[layers] = torch.where(ok[:, None, :], lse, lse_new[layers])
        pending[layers] = wait & ~ok
        if not bool(pending.any()):
            break
        # Safeguarded minimiser of the quadratic through f, slope and the trial value.
        curvature = (trial - f[layers] - at_step * slope[layers]).clamp_min(1e-300)
        shrunk = (-slope[layers] * at_step.square() / (2 * curvature)).clamp(
            0.1 * at_step, 0.5 * at_step
        )
        step[layers] = torch.where(pending[layers], shrunk, at_step)
        layers = pending.any(1).nonzero()[:, 0]
    step = torch.where(pending, 0.0, step)
    z_new = torch.where((step > 0)[:, None, :, None], z_new, z)
    return step, f_new, pending, z_new, lse_new


def solve(
    problems: Problems, max_iter: int, tol: float
) -> tuple[
    Float[Tensor, "layers folds k d1"],
    Int[Tensor, "layers folds"],
    Float[Tensor, "layers folds"],
    Bool[Tensor, "layers folds"],
]:
    """Minimise every problem: returns theta, iterations, max |gradient| and convergence.

    A problem stops when its max |gradient| <= tol, or (as scipy's L-BFGS-B with
    scikit-learn's ftol = 64 eps) when it makes no more progress. A layer iterates on float32
    row products until every one of its problems has stopped, then recomputes its logits,
    objective and gradient in float64 and carries on there, so the tests are float64's.
    """
    shape = problems.shape
    L, F, k, _ = shape
    P, D = L * F, math.prod(shape[2:])
    n = problems.weights.shape[0]
    exact = [False] * L  # layers on their float64 rows
    theta = torch.zeros(shape, dtype=torch.float64)
    z = torch.zeros(L, n, F, k, dtype=torch.float64)  # logits, updated along every step
    every = list(range(L))
    pre = Preconditioner(problems)
    pre.shared(z, every)  # the Hessian at zero
    # Folds' own matrices (one factorisation each) only where features do not outnumber rows.
    per_fold = problems.shape[3] <= int(problems.n_train.max())
    f = problems.loss(z) + problems.penalty(theta)
    resid = problems.residuals(z)
    g = problems.gradient(theta, resid, every, exact)
    memory = _History.empty(P, D)
    n_iter = torch.zeros(L, F, dtype=torch.long)
    stuck = torch.zeros(L, F, dtype=torch.bool)

    def gnorm(t: Tensor) -> Tensor:
        return t.abs().amax((-1, -2))

    def in_float64(layers: list[int]) -> None:
        """Recompute the layers' logits, objective and gradient exactly; go on in float64."""
        at = torch.tensor(layers)
        for layer in layers:
            exact[layer] = True
        z[at] = problems.logits(theta[at], layers, [True] * len(layers))
        f[at] = problems.loss(z[at]) + problems.penalty(theta[at])
        resid = problems.residuals(z[at])
        g[at] = problems.gradient(theta[at], resid, layers, [True] * len(layers))
        stuck[at] = False

    for it in range(max_iter + 1):
        stopped = stuck | (gnorm(g) <= tol)
        handover = [layer for layer in every if not exact[layer] and bool(stopped[layer].all())]
        if handover:
            in_float64(handover)
            stopped = stuck | (gnorm(g) <= tol)
        active = ~stopped
        if not bool(active.any()) or it == max_iter:
            break
        running = active.any(1).nonzero()[:, 0].tolist()
        at: Tensor | slice = slice(None) if len(running) == L else torch.tensor(running)
        if it == _REFRESH_AT:
            if per_fold:
                pre.per_fold(z, running)
            else:
                pre.shared(z, running)
            memory.forget(active.view(P))

        def precondition(
            t: Tensor, at: Tensor | slice = at, running: list[int] = running
        ) -> Tensor:
            out = t.clone().view(shape)
            out[at] = pre.apply(out[at], running)
            return out.view(P, D)

        flat_g, flat_active = g.view(P, D), active.view(P)
        direction = memory.direction(flat_g, precondition)
        lost = flat_active & ~((flat_g * direction).sum(1) < 0)
        if bool(lost.any()):  # not a descent direction: restart those problems
            memory.forget(lost)
            direction[lost] = -precondition(flat_g)[lost]
        direction[~flat_active] = 0.0
        direction = direction.view(shape)
        slope = (g * direction).sum((-1, -2))
        flags = [exact[layer] for layer in running]
        zd = problems.logits(direction[at], running, flags)
        step, f_run, failed, z_run, lse = _line_search(
            problems, z[at], zd, theta[at], direction[at], f[at], slope[at]
        )
        s = torch.zeros_like(theta)
        s[at] = step[..., None, None] * direction[at]
        theta = theta + s
        z[at] = z_run
        resid = problems.residuals(z_run, lse)
        f_new, g_new = f.clone(), g.clone()
        f_new[at] = f_run
        fresh = problems.gradient(theta[at], resid, running, flags)
        g_new[at] = torch.where((step > 0)[..., None, None], fresh, g[at])
        y = (g_new - g).view(P, D)
        sms = torch.zeros(L, F, dtype=torch.float64)
        sms[at] = pre.quadratic(zd, direction[at], at) * step.square()
        memory.push(s.view(P, D), y, sms.view(P))
        flat = (f - f_new) <= _FTOL * torch.maximum(f.abs(), f_new.abs()).clamp_min(1.0)
        stuck[at] |= active[at] & (failed | flat[at])
        f, g = f_new, g_new
        n_iter += active.long()
    if not all(exact):  # out of iterations: report the float64 gradient
        in_float64([layer for layer in every if not exact[layer]])
    grad_norm = gnorm(g)
    return theta, n_iter, grad_norm, (grad_norm <= tol) | stuck
