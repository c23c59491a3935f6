"""The pose search: a budgeted black-box optimiser over camera poses (azimuth, elevation, distance).

The objective (true-class margin of the rendered view) is non-smooth and only available through the
renderer, so the search is derivative-free: a global phase of scrambled-Sobol samples (even coverage of the
camera space for few samples), then local refinement around the best point so far with Gaussian steps that shrink
after every generation without improvement. Each generation is one batch; `PoseSearch` (ask/tell) lets the
searches of many objects share one render batch and one encode per generation.
Azimuth is periodic and wraps; elevation and distance are clipped to their ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.stats import qmc

# Poses [P, 3] (azimuth deg, elevation deg, distance) -> objective [P] (lower = worse for the model).
Objective = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SearchSpace:
    elevation: tuple[float, float] = (-90.0, 90.0)
    distance: tuple[float, float] = (3.0, 4.0)

    @property
    def lows(self) -> np.ndarray:
        return np.array([-180.0, self.elevation[0], self.distance[0]])

    @property
    def spans(self) -> np.ndarray:
        return np.array([360.0, self.elevation[1] - self.elevation[0], self.distance[1] - self.distance[0]])

    def project(self, poses: np.ndarray) -> np.ndarray:
        """Wrap azimuth into [-180, 180) and clip the other two coordinates into range."""
        p = np.array(poses, dtype=float, copy=True)
        p[:, 0] = (p[:, 0] + 180.0) % 360.0 - 180.0
        p[:, 1] = np.clip(p[:, 1], *self.elevation)
        p[:, 2] = np.clip(p[:, 2], *self.distance)
        return p


@dataclass
class SearchResult:
    best_pose: np.ndarray  # [3]
    best_value: float
    n_evals: int
    history: list[tuple[float, float, float, float]] = field(default_factory=list)  # (az, el, dist, value)


class PoseSearch:
    """The search as ask/tell, so many searches (one per object) can share one batched render + encode per step:
    `ask()` gives the next batch of poses (None when the budget is spent), `tell(values)` reports their objective.

    Phases: `seed_poses` (evaluated, counted), then `n_random` scrambled-Sobol samples, then local refinement around
    the best pose so far, a (1+lambda) evolution strategy whose step shrinks after a generation without
    improvement. `known` (pose, value) pairs cost nothing and only set the starting best."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        budget: int,
        n_random: int,
        population: int = 6,
        init_sigma: float = 0.1,
        shrink: float = 0.5,
        seed: int = 0,
        seed_poses: Sequence[Sequence[float]] = (),
        known: Sequence[tuple[Sequence[float], float]] = (),
    ):
        if budget < 1 or n_random < 0:
            raise ValueError(f"search_worst_view: budget must be >= 1 and n_random >= 0 (got {budget}, {n_random})")
        self.space, self.budget, self.n_random, self.population = space, budget, n_random, population
        self.init_sigma, self.shrink, self.sigma = init_sigma, shrink, init_sigma
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[float, float, float, float]] = []
        self.best_pose: np.ndarray | None = None
        self.best_val = np.inf
        for pose, value in known:
            if float(value) < self.best_val:
                self.best_pose = space.project(np.asarray(pose, float).reshape(1, 3))[0]
                self.best_val = float(value)
        self._seeds = np.asarray(seed_poses, dtype=float).reshape(-1, 3) if len(seed_poses) else None
        self._global_done = False
        self._pending: np.ndarray | None = None
        self._before = np.inf

    def ask(self) -> np.ndarray | None:
        if self._pending is not None:
            raise RuntimeError("PoseSearch.ask: the previous batch was not told")
        left = self.budget - len(self.history)
        if left <= 0:
            return None
        poses = None
        if self._seeds is not None:
            poses, self._seeds = self._seeds, None
        elif not self._global_done:
            self._global_done = True
            n_global = min(self.n_random, left)
            if n_global > 0:
                # Sobol points are balanced in powers of two; other counts only trigger a (harmless) warning.
                sobol = qmc.Sobol(d=3, scramble=True, rng=self.rng)
                u = sobol.random(1 << int(np.ceil(np.log2(n_global))))[:n_global]
                poses = self.space.lows + u * self.space.spans
        if poses is None:
            if self.best_pose is None:
                return None
            self._before = self.best_val
            poses = self.best_pose + self.rng.normal(size=(self.population, 3)) * self.sigma * self.space.spans
            self._local = True
        else:
            self._local = False
        self._pending = self.space.project(poses)[:left]
        return self._pending

    def tell(self, values) -> None:
        poses, self._pending = self._pending, None
        if poses is None:
            raise RuntimeError("PoseSearch.tell without ask")
        vals = np.asarray(values, dtype=float).reshape(-1)
        if vals.shape[0] != poses.shape[0]:
            raise ValueError(f"objective returned {vals.shape[0]} values for {poses.shape[0]} poses")
        for p, v in zip(poses, vals):
            self.history.append((float(p[0]), float(p[1]), float(p[2]), float(v)))
        i = int(np.argmin(vals))
        if vals[i] < self.best_val:
            self.best_pose, self.best_val = poses[i].copy(), float(vals[i])
        # Elitist: keep the step while it pays, narrow it after a generation without improvement. (Widening after
        # successes was measured worse on the planted-basin toy: it overshoots.)
        if self._local and self.best_val >= self._before:
            self.sigma *= self.shrink
            if self.sigma < 1e-3:  # converged to a sub-degree neighbourhood: spend the rest globally
                self.sigma = self.init_sigma

    def result(self) -> SearchResult:
        if self.best_pose is None:
            raise RuntimeError("search_worst_view: no evaluation was made")
        return SearchResult(self.best_pose, self.best_val, len(self.history), self.history)


def search_worst_view(
    objective: Objective,
    space: SearchSpace,
    *,
    budget: int,
    n_random: int,
    population: int = 6,
    init_sigma: float = 0.1,
    shrink: float = 0.5,
    seed: int = 0,
    seed_poses: Sequence[Sequence[float]] = (),
    known: Sequence[tuple[Sequence[float], float]] = (),
) -> SearchResult:
    """Minimise `objective` over camera poses with at most `budget` evaluations (one search, see PoseSearch).

    `seed_poses` are evaluated first and count against the budget. `known` are (pose, value) pairs already
    measured elsewhere (e.g. the rendered views' worst): they cost nothing, and local refinement starts from the
    best of them and of the global samples, so the result is never worse than the best known value.
    """
    search = PoseSearch(
        space,
        budget=budget,
        n_random=n_random,
        population=population,
        init_sigma=init_sigma,
        shrink=shrink,
        seed=seed,
        seed_poses=seed_poses,
        known=known,
    )
    while (poses := search.ask()) is not None:
        search.tell(objective(poses))
    return search.result()
