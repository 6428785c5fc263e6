"""Simulate stage: the synthetic network whose wiring W the GNN must recover.

PDE_N2 dynamics (README.md, "What is simulated and learned"), neuron i of type t = types[i] with (g, s, c)::

    du_i/dt = -c_t u_i + s_t tanh(u_i) + g_t * sum_j W_ij tanh(u_j)

integrated with explicit Euler at ``delta_t``; ``n_burn_in`` steps are discarded, then
``n_frames`` states are saved with du/dt evaluated at each saved state, so that without
noise ``u[k+1] = u[k] + delta_t * du[k]`` holds exactly in float32 (the state is integrated
in float32: the matrix-vector product is memory-bound and float32 halves its cost).

Noise: process noise (``noise_model_level``) is added to u after every Euler step, so du is
still du/dt at the saved (noisy) state; measurement noise (``measurement_noise_level``) is
added to the saved u only, and du stays the clean du/dt of the underlying trajectory.

Randomness comes from independent streams spawned from ``simulation.seed`` (types, W,
initial state, process noise, measurement noise, the excitatory columns under Dale's law), so
switching noise on does not change W.
Same config, same bytes (the BLAS is limited to one thread, see device.single_threaded_blas).

The dataset folder layout is in docs/architecture.md; ``u.npy`` and ``du.npy`` are written
frame by frame into ``np.lib.format.open_memmap`` temp files and renamed at the end, so the
whole recording never sits in RAM and an interrupted run leaves no partial array.
``metadata.json`` is written last: its presence marks a complete dataset.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from neuralgraph import __version__
from neuralgraph.config import INITIAL_STATE_CANDIDATES, ConfigError, ExperimentConfig, SimulationConfig, load_config
from neuralgraph.dataset import ACTIVITY_PICTURE, CONNECTIVITY_PICTURE, METADATA_FILE
from neuralgraph.device import single_threaded_blas
from neuralgraph.io import atomic_path, atomic_save_npy, atomic_write_json, read_json

#: Cauchy samples beyond this magnitude are zeroed (not redrawn) in Lorentz connectivity.
LORENTZ_CUTOFF = 25.0
#: Frames between progress-bar updates (updating every frame would cost more than a frame).
_PROGRESS_EVERY = 1000
#: Process-noise samples drawn per call (drawing one vector per frame is slower).
_NOISE_CHUNK = 1024

#: Independent random streams, one per source of randomness. New streams go at the END:
#: stream i is SeedSequence(seed).spawn(...)[i] whatever the length, so appending one keeps
#: every existing stream (and dataset) unchanged.
_STREAMS = ("types", "connectivity", "initial_state", "process_noise", "measurement_noise", "dale_excitatory")


# --------------------------------------------------------------------------- dynamics


def pde_n2_rhs(u: np.ndarray, W: np.ndarray, types: np.ndarray, type_params: np.ndarray) -> np.ndarray:
    """du/dt of the PDE_N2 model for states ``u`` of shape (..., N) (any leading batch dims).

    ``W[i, j]`` is the weight of edge j -> i; ``type_params[t] = [g, s, c]``.
    The result has the floating dtype of ``u`` (float32 in, float32 out).
    """
    u = np.asarray(u)
    dtype = u.dtype if np.issubdtype(u.dtype, np.floating) else np.float64
    u = u.astype(dtype, copy=False)
    g, s, c = _per_neuron_params(types, type_params, dtype)
    activation = np.tanh(u)
    coupling = activation @ np.asarray(W, dtype=dtype).T  # (..., N): sum_j W_ij tanh(u_j)
    return -c * u + s * activation + g * coupling


def euler_rollout(
    u0: np.ndarray,
    W: np.ndarray,
    types: np.ndarray,
    type_params: np.ndarray,
    delta_t: float,
    n_steps: int,
) -> np.ndarray:
    """Noise-free Euler trajectory from ``u0``: array (n_steps + 1, N) whose row 0 is ``u0``.

    Uses the same float32 arithmetic as :func:`simulate` when ``u0`` is float32, so a rollout
    started at a saved frame reproduces the following saved frames of a noise-free dataset.
    """
    u0 = np.asarray(u0)
    if u0.ndim != 1:
        raise ValueError(f"euler_rollout: u0 must have shape (N,), got {u0.shape}")
    if n_steps < 0:
        raise ValueError(f"euler_rollout: n_steps = {n_steps}: must be >= 0")
    dtype = u0.dtype if np.issubdtype(u0.dtype, np.floating) else np.float64
    step = _EulerStepper(W, types, type_params, delta_t, dtype)
    out = np.empty((n_steps + 1, u0.shape[0]), dtype=dtype)
    out[0] = u0
    du = np.empty_like(out[0])
    with single_threaded_blas():
        for k in range(n_steps):
            step.advance(out[k], step.rhs(out[k], out=du), out=out[k + 1])
    return out


def _per_neuron_params(types: np.ndarray, type_params: np.ndarray, dtype: Any) -> tuple[np.ndarray, ...]:
    """(g, s, c) vectors of length N from the per-type table."""
    table = np.asarray(type_params, dtype=dtype)[np.asarray(types, dtype=np.int64)]
    return table[:, 0], table[:, 1], table[:, 2]


class _EulerStepper:
    """One Euler step with everything per-neuron precomputed (the simulator's hot loop).

    Same terms in the same order as :func:`pde_n2_rhs` (-c u + s tanh(u) + g (W tanh(u))),
    computed into preallocated buffers: the loop is dominated by the mat-vec, and avoiding
    five temporary arrays per frame saves about 20% of the rest.
    """

    def __init__(self, W, types, type_params, delta_t: float, dtype=np.float32):
        self.W = np.ascontiguousarray(W, dtype=dtype)
        self.g, self.s, self.neg_c = (p.copy() for p in _per_neuron_params(types, type_params, dtype))
        self.neg_c *= -1
        self.dt = np.dtype(dtype).type(delta_t)
        n = self.W.shape[0]
        self._activation, self._coupling, self._term = (np.empty(n, dtype=dtype) for _ in range(3))

    def rhs(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """du/dt at ``u``, written into ``out`` (e.g. the saved row) when given."""
        out = np.empty_like(u) if out is None else out
        np.tanh(u, out=self._activation)
        np.matmul(self.W, self._activation, out=self._coupling)
        np.multiply(self.neg_c, u, out=out)
        np.multiply(self.s, self._activation, out=self._term)
        out += self._term
        self._coupling *= self.g
        out += self._coupling
        return out

    def advance(self, u: np.ndarray, du: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """u + delta_t * du (into ``out``; ``out`` may be ``u`` itself)."""
        np.multiply(du, self.dt, out=self._term)
        return np.add(u, self._term, out=u.copy() if out is None else out)


# --------------------------------------------------------------------------- network


def lorentz_exponent(n_neurons: int) -> float:
    """Exponent e of the N**e normalisation of Lorentz weights (the reference's table)."""
    if n_neurons < 2000:
        return 0.7
    if n_neurons < 4000:
        return 0.675
    if n_neurons < 8000:
        return 0.67
    return 0.5


#: Std of a standard Cauchy sample after zeroing |s| > 25: sqrt((2/pi) (25 - atan 25)) = 3.866.
LORENTZ_RAW_STD = float(np.sqrt(2.0 / np.pi * (LORENTZ_CUTOFF - np.arctan(LORENTZ_CUTOFF))))


def lorentz_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    """Cauchy weights: N*N standard Cauchy samples, |s| > 25 set to 0, divided by N**e.

    Scale: every |W_ij| <= 25 / N**e (e = :func:`lorentz_exponent`, 0.7 for N < 2000) and the
    entries' std is LORENTZ_RAW_STD / N**e = 3.866 / N**e (N = 1000: max 0.199, std 0.031;
    about 2.5% of entries are zero from the cutoff). Heavy-tailed: most weights are tiny,
    a few are strong.
    """
    samples = rng.standard_cauchy(n * n)
    samples[np.abs(samples) > LORENTZ_CUTOFF] = 0.0
    return (samples / n ** lorentz_exponent(n)).reshape(n, n)


def gaussian_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    """Normal weights of std 1/sqrt(N) (spectral radius about 1 for large N)."""
    return rng.standard_normal((n, n)) / np.sqrt(n)


def low_rank_weights(n: int, rank: int, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """W = U V / sqrt(r N) with U (N x r), V (r x N) standard normal: rank r, entry std 1/sqrt(N).

    The reference's construction and scaling exactly (checked against its generator: Gaussian
    U, V, divided by sqrt(r N), diagonal zeroed afterwards). The nonzero eigenvalues are those
    of V U / sqrt(r N), an r x r matrix with entries of std about 1/sqrt(r): spectral radius
    about 1, spread between seeds (r = 20, N = 100: 0.95 to 1.12 over seeds 0, 1, 2, 4;
    docs/benchmarks.md).
    """
    left = rng.standard_normal((n, rank))
    right = rng.standard_normal((rank, n))
    return left @ right / np.sqrt(rank * n)


def reference_weights(sim: SimulationConfig) -> np.ndarray:
    """W as the reference's generator draws it for ``simulation.seed`` (``W_draw: reference``).

    Why: our W for seed k is another matrix than the reference's seed k, so its published number
    on one W could only be compared with ours on other draws. Its generator (saalfeldlab/
    NeuralGraph ``generators/graph_data_generator.py`` and ``generators/utils.py``, read
    2026-12-07) seeds numpy's legacy global generator with the simulation seed and draws W with
    numpy's first calls after it: ``randn(N, N) * sqrt(1/N)`` for its "chaotic" (our Gaussian)
    type, ``U = randn(N, r)`` then ``V = randn(r, N)`` and ``U V / sqrt(r N)`` for low_rank;
    float32, diagonal zeroed by the caller. Checked against its published spectral radii:
    Gaussian N = 100 seed 42 gives 1.065 (its gain-1 run), low_rank seed 42 gives 0.952 (its
    low-rank case, ~0.95). Its initial state and process noise come from torch's generator on
    its GPU, which this project does not reproduce: only W is the reference's.
    """
    legacy = np.random.RandomState(sim.seed)  # = np.random.seed(seed) followed by np.random.randn
    n = sim.n_neurons
    if sim.connectivity_type == "Gaussian":
        return legacy.randn(n, n) * np.sqrt(1.0 / n)
    if sim.connectivity_type == "low_rank":  # our construction, on its stream: randn(N, r) then randn(r, N)
        return low_rank_weights(n, sim.connectivity_rank, legacy)
    raise ValueError(f"simulation.W_draw = 'reference' with connectivity_type = {sim.connectivity_type!r}: "
                     f"must be one of Gaussian, low_rank")  # the config schema refuses it first


def apply_filling_factor(W: np.ndarray, filling_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Keep each entry with probability ``filling_factor`` (sparse wiring); no rescaling."""
    if filling_factor >= 1.0:
        return W
    return W * (rng.random(W.shape) < filling_factor)


#: Values of simulation.Dale_law_excitatory (the config schema owns the default).
DALE_EXCITATORY_RULES = ("random", "first_columns")


def excitatory_columns(n: int, excitatory_fraction: float, rule: str = "random",
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """Boolean mask of the excitatory columns (presynaptic neurons) under Dale's law.

    round(N * fraction) columns are excitatory. ``first_columns``: the first ones (the
    reference's rule; with contiguous type blocks the sign of a column is then a function of
    its type, a confound for recovering W). ``random``: a uniformly drawn subset of that size
    from ``rng``, independent of the neuron types.
    """
    n_excitatory = int(round(n * excitatory_fraction))
    mask = np.zeros(n, dtype=bool)
    if rule == "first_columns":
        mask[:n_excitatory] = True
    elif rule == "random":
        if rng is None:
            raise ValueError("excitatory_columns: rule 'random' needs a random generator")
        mask[rng.choice(n, size=n_excitatory, replace=False)] = True
    else:
        raise ValueError(f"simulation.Dale_law_excitatory = {rule!r}: must be one of {', '.join(DALE_EXCITATORY_RULES)}")
    return mask


def apply_dale_law(W: np.ndarray, excitatory_fraction: float, rule: str = "first_columns",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Dale's law: |W|, then the inhibitory columns (see :func:`excitatory_columns`) negated."""
    W = np.abs(W)
    W[:, ~excitatory_columns(W.shape[1], excitatory_fraction, rule, rng)] *= -1.0
    return W


def make_connectivity(sim: SimulationConfig, rng: np.random.Generator,
                      dale_rng: np.random.Generator | None = None) -> np.ndarray:
    """The true W (float32, N x N, zero diagonal) for the simulation section.

    ``dale_rng`` draws the excitatory columns under Dale's law with rule ``random`` (its own
    stream, so the weights themselves are the same numbers whichever rule is chosen); None =
    the ``dale_excitatory`` stream of ``simulation.seed``, as :func:`simulate` uses.
    """
    if dale_rng is None and sim.Dale_law and sim.Dale_law_excitatory == "random":
        dale_rng = _rngs(sim.seed)["dale_excitatory"]
    n = sim.n_neurons
    if sim.W_draw == "reference":
        W = reference_weights(sim)
    elif sim.connectivity_type == "Lorentz":
        W = lorentz_weights(n, rng)
    elif sim.connectivity_type == "Gaussian":
        W = gaussian_weights(n, rng)
    elif sim.connectivity_type == "low_rank":
        W = low_rank_weights(n, sim.connectivity_rank, rng)
    else:  # the config schema only admits the three above
        raise ValueError(f"simulation.connectivity_type = {sim.connectivity_type!r}: must be one of Lorentz, Gaussian, low_rank")
    W = apply_filling_factor(W, sim.connectivity_filling_factor, rng)
    if sim.Dale_law:
        W = apply_dale_law(W, sim.Dale_law_factor, sim.Dale_law_excitatory, dale_rng)
    np.fill_diagonal(W, 0.0)
    return W.astype(np.float32)


def make_types(sim: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Neuron types: contiguous blocks of N/K neurons, or a seeded permutation of them."""
    types = np.repeat(np.arange(sim.n_neuron_types, dtype=np.int64), sim.n_neurons // sim.n_neuron_types)
    if sim.shuffle_types:
        rng.shuffle(types)
    return types


def initial_state(sim: SimulationConfig, stream: int | None = None) -> np.ndarray:
    """u(0) ~ N(0, initial_state_std^2), float32, from the ``initial_state`` stream of seed
    ``stream`` (None: simulation.seed's own). Another stream records the same W along another
    trajectory: nothing else moves (types, W and noise keep simulation.seed's streams)."""
    rng = _rngs(sim.seed if stream is None else stream)["initial_state"]
    return (sim.initial_state_std * rng.standard_normal(sim.n_neurons)).astype(np.float32)


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per source of randomness (see module docstring)."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def _progress_bar(total: int, enabled: bool):
    """tqdm bar on stderr showing frames/s and ETA (disabled bar when ``enabled`` is False)."""
    interactive = sys.stderr.isatty()  # in a SLURM/Snakemake log file: one line every 10 s
    return tqdm(total=total, desc="simulate", unit="frame", unit_scale=True, disable=not enabled,
                file=sys.stderr, mininterval=0.5 if interactive else 10.0, smoothing=0.1)


def _noise_stream(rng: np.random.Generator, level: float, n: int):
    """Yield float32 noise vectors level * N(0,1), drawn _NOISE_CHUNK at a time (endless)."""
    while True:
        block = (level * rng.standard_normal((_NOISE_CHUNK, n))).astype(np.float32)
        yield from block


def _run_dynamics(sim: SimulationConfig, stepper: _EulerStepper, u: np.ndarray,
                  u_out: np.ndarray, du_out: np.ndarray, noise_rng: np.random.Generator, bar) -> None:
    """Burn-in then the saved frames, written row by row into ``u_out`` / ``du_out``."""
    noise = _noise_stream(noise_rng, sim.noise_model_level, u.shape[0]) if sim.noise_model_level > 0 else None
    total = sim.n_burn_in + sim.n_frames
    u = u.copy()  # advanced in place
    scratch = np.empty_like(u)  # du of the burn-in steps (not saved)
    with np.errstate(over="ignore", invalid="ignore"):  # blow-ups are caught by _check_finite
        for step in range(total):
            k = step - sim.n_burn_in
            if k >= 0:
                u_out[k] = u
            du = stepper.rhs(u, out=du_out[k] if k >= 0 else scratch)
            stepper.advance(u, du, out=u)
            if noise is not None:
                u += next(noise)
            if (step + 1) % _PROGRESS_EVERY == 0 or step + 1 == total:
                bar.update(step + 1 - bar.n)
                _check_finite(u, step, sim)


def _check_finite(u: np.ndarray, step: int, sim: SimulationConfig) -> None:
    """Stop early (instead of writing 800 MB of NaN) when the dynamics blow up."""
    if not np.all(np.isfinite(u)):
        raise FloatingPointError(
            f"simulation diverged at step {step} (burn-in {sim.n_burn_in}): non-finite activity; "
            f"reduce simulation.delta_t or the connectivity scale"
        )


def _add_measurement_noise(u_out: np.ndarray, level: float, rng: np.random.Generator) -> None:
    """Add level * N(0,1) to the saved u in place, chunk by chunk (du stays the clean du/dt)."""
    for start in range(0, u_out.shape[0], _NOISE_CHUNK):
        chunk = u_out[start : start + _NOISE_CHUNK]
        chunk += (level * rng.standard_normal(chunk.shape)).astype(np.float32)


#: Below this tail_activity_ratio the recording is reported as having decayed.
DEAD_ACTIVITY_RATIO = 0.05


def _warn_if_activity_died(ratio: float, out: Path) -> None:
    """A network that settles on a fixed point gives a useless dataset: say so loudly."""
    if ratio < DEAD_ACTIVITY_RATIO:
        print(f"warning: {out}: activity decayed (std over the last 10% of frames is {ratio:.1%} of the "
              f"whole recording's); try another simulation.seed or a stronger connectivity", file=sys.stderr)


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": version("torch"), "neuralgraph": __version__}


class _PhaseTimer:
    """Wall seconds per phase of the stage, recorded in metadata.json (where did the time go)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._last = self.started

    def lap(self, phase: str) -> None:
        """Add the seconds since the last lap to ``phase`` (a phase run more than once, such as the
        dynamics of each u(0) the rank rule tries, sums)."""
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 3)
        self._last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def _write_activity(sim: SimulationConfig, stepper: _EulerStepper, u0: np.ndarray,
                    rngs: dict[str, np.random.Generator], out: Path, progress: bool, timer: _PhaseTimer) -> None:
    """Run the dynamics into u.npy / du.npy: memory-mapped temp files renamed when complete."""
    shape = (sim.n_frames, sim.n_neurons)
    with atomic_path(out / "u.npy", suffix=".npy") as u_tmp, atomic_path(out / "du.npy", suffix=".npy") as du_tmp:
        u_out = np.lib.format.open_memmap(u_tmp, mode="w+", dtype=np.float32, shape=shape)
        du_out = np.lib.format.open_memmap(du_tmp, mode="w+", dtype=np.float32, shape=shape)
        with _progress_bar(sim.n_burn_in + sim.n_frames, progress) as bar, single_threaded_blas():
            _run_dynamics(sim, stepper, u0, u_out, du_out, rngs["process_noise"], bar)
        if sim.measurement_noise_level > 0:
            _add_measurement_noise(u_out, sim.measurement_noise_level, rngs["measurement_noise"])
        timer.lap("dynamics")
        # on disk before the rename: a shared cluster file system must never serve the new
        # name with pages still only in this node's memory
        u_out.flush()
        du_out.flush()
        del u_out, du_out
    timer.lap("flush")


def _record(sim: SimulationConfig, stepper: _EulerStepper, out: Path, progress: bool,
            timer: _PhaseTimer) -> dict[str, Any] | None:
    """Write u.npy / du.npy along the u(0) stream the config names; under ``initial_state_rank``
    along the first stream whose activity's effective rank (99%) is in range, else the own
    stream. Each try restarts every other stream (noise) from simulation.seed, so the recording
    kept is bit-identical to a run with that ``initial_state_seed``. Returns what was tried
    (None without the rule)."""
    from neuralgraph.stats import effective_ranks

    def record_along(stream: int | None) -> None:
        _write_activity(sim, stepper, initial_state(sim, stream), _rngs(sim.seed), out, progress, timer)

    if sim.initial_state_rank is None:
        record_along(sim.initial_state_seed)
        return None
    low, high = sim.initial_state_rank
    tried: list[dict[str, Any]] = []
    own = {name: out / f".{name}.own" for name in ("u.npy", "du.npy")}
    try:
        for stream in [None, *range(INITIAL_STATE_CANDIDATES)]:  # the own stream first
            record_along(stream)
            rank = effective_ranks(np.load(out / "u.npy", mmap_mode="r"), (0.99,))[0]
            tried.append({"initial_state_seed": stream, "effective_rank_99": rank})
            if low <= rank <= high:
                _say_initial_state(out, stream, tried, in_range=True)
                return {"rank_range": [low, high], "initial_state_seed": stream, "in_range": True, "tried": tried}
            if stream is None:  # kept aside, not simulated again (minutes at N = 1000) if none is in range
                for name, aside in own.items():
                    os.replace(out / name, aside)
        for name, aside in own.items():  # none in range: the own stream's recording
            os.replace(aside, out / name)
        _say_initial_state(out, None, tried, in_range=False)
        return {"rank_range": [low, high], "initial_state_seed": None, "in_range": False, "tried": tried}
    finally:
        for aside in own.values():
            aside.unlink(missing_ok=True)


def _say_initial_state(out: Path, stream: int | None, tried: list[dict[str, Any]], in_range: bool) -> None:
    """One log line: which u(0) the rank rule kept, and the ranks it saw on the way."""
    ranks = ", ".join(f"{'own' if t['initial_state_seed'] is None else t['initial_state_seed']}: "
                      f"{t['effective_rank_99']}" for t in tried)
    kept = "simulation.seed's own" if stream is None else f"initial_state_seed {stream}"
    verdict = "in range" if in_range else "none in range, so the own stream"
    print(f"{out}: u(0) from {kept} ({verdict}; effective rank 99% by stream: {ranks})", file=sys.stderr)


def _metadata(cfg: ExperimentConfig, timer: _PhaseTimer, initial_state_choice: dict[str, Any] | None) -> dict[str, Any]:
    sim = cfg.simulation
    return {
        "config": cfg.to_dict(),
        "simulation_hash": cfg.simulation_hash(),
        "seed": sim.seed,
        "delta_t": sim.delta_t,
        "n_frames": sim.n_frames,
        "n_neurons": sim.n_neurons,
        "n_types": sim.n_neuron_types,
        "versions": _versions(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "simulation_seconds": timer.seconds["dynamics"],
        "phase_seconds": dict(timer.seconds),
        "wall_seconds": timer.total(),
        **({"initial_state": initial_state_choice} if initial_state_choice is not None else {}),
    }


def simulate(cfg: ExperimentConfig, out_dir: str | os.PathLike, progress: bool = True,
             pictures: bool = True) -> Path:
    """Simulate ``cfg.simulation`` and write the dataset folder ``out_dir``; return its path.

    Writes u, du (memory-mapped, atomically renamed), W, types, type_params, stats.json,
    analysis.log, activity.png / connectivity.png (unless ``pictures`` is False) and finally
    metadata.json.
    """
    from neuralgraph import plots, stats  # plots imports matplotlib: only when needed

    if not isinstance(cfg, ExperimentConfig):
        raise TypeError(f"simulate: cfg must be an ExperimentConfig (neuralgraph.config.load_config), got {type(cfg).__name__}")
    timer = _PhaseTimer()
    sim = cfg.simulation
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out must be a folder (it is a file)")
    out.mkdir(parents=True, exist_ok=True)
    # metadata.json marks a complete dataset: drop an old one first, so a run that fails
    # half-way never leaves new arrays next to the old dataset's metadata
    (out / METADATA_FILE).unlink(missing_ok=True)
    rngs = _rngs(sim.seed)
    types = make_types(sim, rngs["types"])
    W = make_connectivity(sim, rngs["connectivity"], rngs["dale_excitatory"])
    type_params = np.asarray(sim.type_params(), dtype=np.float32)
    timer.lap("network")

    choice = _record(sim, _EulerStepper(W, types, type_params, sim.delta_t, np.float32), out, progress, timer)
    atomic_save_npy(out / "W.npy", W)
    atomic_save_npy(out / "types.npy", types)
    atomic_save_npy(out / "type_params.npy", type_params)
    u = np.load(out / "u.npy", mmap_mode="r")
    data_stats = stats.dataset_statistics(u, W)
    stats.write_statistics(data_stats, out)
    _warn_if_activity_died(data_stats["tail_activity_ratio"], out)
    timer.lap("statistics")
    if pictures:
        plots.plot_activity(u, types, sim.delta_t, out / ACTIVITY_PICTURE, type_params=type_params)
        plots.plot_connectivity(W, types, out / CONNECTIVITY_PICTURE)
        timer.lap("pictures")
    atomic_write_json(out / METADATA_FILE, _metadata(cfg, timer, choice))
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m neuralgraph simulate --config C --out DIR``; exit 2 on a bad config (nothing written)."""
    parser = argparse.ArgumentParser(prog="python -m neuralgraph simulate", description="Simulate the network and write the dataset folder.")
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("--out", required=True, help="dataset folder to write (created)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-pictures", action="store_true", help="skip activity.png and connectivity.png")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        out = simulate(cfg, args.out, progress=not args.no_progress, pictures=not args.no_pictures)
    except (FloatingPointError, NotADirectoryError) as exc:
        print(f"simulate error: {args.config}: {exc}", file=sys.stderr)
        return 1
    meta = read_json(out / METADATA_FILE)
    print(f"{out}: {meta['n_frames']} frames x {meta['n_neurons']} neurons in {meta['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
