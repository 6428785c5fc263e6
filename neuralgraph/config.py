"""Experiment configuration: schema, defaults, loading and validation.

One YAML file describes an experiment with the sections of the seed document:
``simulation`` (the synthetic network, fixed for the whole exploration), ``graph_model``
(the GNN), ``training`` (the recurrent trainer, the agent's main search space), ``claude``
(the exploration's own knobs) and ``analysis`` (how results are scored).

Every field has a default, a type and an allowed range declared here, and the whole file is
validated before any work starts. Errors name the file, the dotted field, the offending value
and what is allowed, e.g.::

    config/demo.yaml: training.time_step = 3: must be one of 1, 4, 16, 32, 64

``ALLOWED_TIME_STEPS`` and the ranges below are the single source of truth; the agent's
mutation ranges (``agent.decision``) are narrower and live with the agent.
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neuralgraph.io import LinkRefusedError, atomic_write_text, read_text_nofollow

ALLOWED_TIME_STEPS: tuple[int, ...] = (1, 4, 16, 32, 64)

#: The name of a run's config file in its run folder (what :func:`dump_config` writes there and
#: analyze reads when no --config is given).
CONFIG_FILE = "config.yaml"

#: (g, s, c) per neuron type for the PDE_N2 model (README.md, "What is simulated and learned").
REFERENCE_TYPE_PARAMS: list[list[float]] = [
    [10.0, 1.0, 1.0],
    [10.0, 2.0, 1.0],
    [10.0, 1.0, 2.0],
    [10.0, 2.0, 2.0],
]


class ConfigError(ValueError):
    """A configuration file or value was refused. The message is meant for the user."""


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_booleans_for_numbers(cls, data: Any) -> Any:
        """YAML reads yes/no/true/false as booleans and pydantic would silently take them as
        1/0 for a number (``batch_size: yes`` -> 1): refuse that as a wrong type."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _is_number_field(field.annotation):
                    raise ValueError(f"{name} = {value!r}: wrong type, must be a number, not true/false")
        return data


def _is_number_field(annotation: Any) -> bool:
    """int / float / Optional[int | float] (but not bool)."""
    options = getattr(annotation, "__args__", None) or (annotation,)
    return any(option in (int, float) for option in options)


#: Connectivity types whose draw simulation.W_draw 'reference' reproduces (neuralgraph.simulate.reference_weights).
REFERENCE_W_DRAW_TYPES: tuple[str, ...] = ("Gaussian", "low_rank")
#: How many u(0) streams besides simulation.seed's own ``simulation.initial_state_rank`` tries
#: (initial_state_seed 0 .. INITIAL_STATE_CANDIDATES - 1): enough that a W whose recordings reach the
#: range finds one (the low-rank seeds' ranks over 20 streams, docs/reference.md), few enough to stay
#: seconds at N = 100.
INITIAL_STATE_CANDIDATES = 20


class SimulationConfig(_Section):
    """The simulated network. Fixed for the whole experiment (every iteration shares it)."""

    signal_model: Literal["PDE_N2"] = Field("PDE_N2", description="Dynamics: du_i/dt = -c u_i + s tanh(u_i) + g sum_j W_ij tanh(u_j).")
    n_neurons: int = Field(1000, ge=2, le=100_000, description="Number of neurons N.")
    n_neuron_types: int = Field(4, ge=1, le=64, description="Number of neuron types K; N must be divisible by K.")
    neuron_type_params: Optional[list[list[float]]] = Field(
        None, description="Per-type [g, s, c]; default: the reference table (first K rows, K <= 4)."
    )
    shuffle_types: bool = Field(False, description="Assign types at random instead of contiguous blocks.")
    n_frames: int = Field(100_000, ge=200, le=10_000_000, description="Saved frames after burn-in.")
    delta_t: float = Field(0.01, gt=0.0, le=1.0, description="Euler step of the simulator (and of the model's rollout).")
    n_burn_in: int = Field(1000, ge=0, le=1_000_000, description="Euler steps run and discarded before the first saved frame.")
    initial_state_std: float = Field(5.0, ge=0.0, le=100.0, description="u(0) ~ N(0, std^2).")
    initial_state_seed: Optional[int] = Field(
        None, ge=0, le=2**32 - 1, description="Seed of u(0) alone (None: simulation.seed's), so the same W can be "
        "recorded along another trajectory: the reference's u(0) comes from torch's generator on its GPU, not ours."
    )
    initial_state_rank: Optional[list[int]] = Field(
        None, min_length=2, max_length=2, description="[low, high]: record W along the first u(0) whose activity has "
        "an effective rank (99%, stats.json's) in [low, high], chosen by the activity alone: simulation.seed's own "
        "stream, else initial_state_seed 0, 1, ... (INITIAL_STATE_CANDIDATES of them); where none is in range, the "
        "own stream. metadata.json says which and every rank tried. Why: a published result names its recording's "
        "regime (the reference's u(0) is torch's on its GPU, not reproduced), and one W's recordings differ in rank."
    )
    connectivity_type: Literal["Lorentz", "Gaussian", "low_rank"] = Field("Lorentz", description="How the true W is drawn.")
    connectivity_rank: int = Field(20, ge=1, le=100_000, description="Rank of W for connectivity_type low_rank.")
    connectivity_filling_factor: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of non-zero off-diagonal entries of W.")
    Dale_law: bool = Field(False, description="Impose Dale's law: each presynaptic neuron (column) all + or all -.")
    Dale_law_factor: float = Field(0.5, ge=0.0, le=1.0, description="Fraction of excitatory columns under Dale's law.")
    Dale_law_excitatory: Literal["random", "first_columns"] = Field(
        "random", description="Which columns are excitatory under Dale's law: random = a seeded draw independent of "
        "the neuron types; first_columns = the first N * Dale_law_factor columns (the reference's rule, whose "
        "column signs follow the contiguous type blocks)."
    )
    W_draw: Literal["ours", "reference"] = Field(
        "ours", description="Which random numbers draw W: ours = this project's independent stream of simulation.seed; "
        "reference = the reference's own draw for its seed (numpy's legacy generator seeded with simulation.seed, its "
        "first draw), so simulation.seed k gives the reference's W for seed k (Gaussian and low_rank, full filling)."
    )
    noise_model_level: float = Field(0.0, ge=0.0, le=10.0, description="Process noise std added to u at every Euler step.")
    measurement_noise_level: float = Field(0.0, ge=0.0, le=10.0, description="Measurement noise std added to the saved u.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of W, types and initial state.")

    @model_validator(mode="after")
    def _check_types(self) -> "SimulationConfig":
        if self.n_neurons % self.n_neuron_types != 0:
            raise ValueError(
                f"n_neurons = {self.n_neurons}: must be divisible by n_neuron_types = {self.n_neuron_types}"
            )
        if self.neuron_type_params is None:
            if self.n_neuron_types > len(REFERENCE_TYPE_PARAMS):
                raise ValueError(
                    f"neuron_type_params: required when n_neuron_types > {len(REFERENCE_TYPE_PARAMS)} "
                    f"(one [g, s, c] per type)"
                )
        else:
            params = self.neuron_type_params
            if len(params) != self.n_neuron_types or any(len(row) != 3 for row in params):
                raise ValueError(
                    f"neuron_type_params = {params!r}: must be {self.n_neuron_types} rows of [g, s, c]"
                )
        if self.initial_state_rank is not None:
            low, high = self.initial_state_rank
            if not 1 <= low <= high <= self.n_neurons:
                raise ValueError(f"initial_state_rank = {self.initial_state_rank}: must be [low, high] with "
                                 f"1 <= low <= high <= n_neurons = {self.n_neurons}")
            if self.initial_state_seed is not None:
                raise ValueError(f"initial_state_rank = {self.initial_state_rank} and initial_state_seed = "
                                 f"{self.initial_state_seed}: set one of them (the rank rule chooses the u(0) stream)")
        if self.W_draw == "reference" and (self.connectivity_type not in REFERENCE_W_DRAW_TYPES
                                           or self.connectivity_filling_factor < 1.0):
            raise ValueError(
                f"W_draw = 'reference' with connectivity_type = {self.connectivity_type!r} and "
                f"connectivity_filling_factor = {self.connectivity_filling_factor}: the reference's own draw is "
                f"reproduced for connectivity_type {' or '.join(REFERENCE_W_DRAW_TYPES)} at "
                f"connectivity_filling_factor 1 only (its sparse mask comes from torch's generator, in an order "
                f"that depends on its device); use W_draw 'ours'"
            )
        if self.connectivity_type == "low_rank" and self.connectivity_rank > self.n_neurons:
            raise ValueError(
                f"connectivity_rank = {self.connectivity_rank}: must be <= n_neurons = {self.n_neurons}"
            )
        return self

    def type_params(self) -> list[list[float]]:
        """The [g, s, c] rows actually used, one per type."""
        if self.neuron_type_params is not None:
            return [list(map(float, row)) for row in self.neuron_type_params]
        return [list(row) for row in REFERENCE_TYPE_PARAMS[: self.n_neuron_types]]


#: How lin_edge / lin_phi start (neuralgraph.model.MLP): the allowed values' one home.
MlpInit = Literal["pytorch", "reference"]

#: When the per-neuron embedding a is trained (neuralgraph.model): the allowed values' one home.
#: auto: only when the network has several neuron types (a one-type network keeps a at its start,
#: as the reference's low-rank case does with training_single_type); always: for one type too (the
#: reference's landscape, whose schema default training_single_type False makes a a parameter).
LearnEmbedding = Literal["auto", "always"]


def embedding_is_learned(n_neuron_types: int, learn_embedding: str) -> bool:
    """Whether the embedding a is trained: the one spelling of the rule (model, inert levers)."""
    return learn_embedding == "always" or n_neuron_types > 1


class GraphModelConfig(_Section):
    """The GNN: du_i/dt = lin_phi(u_i, a_i) + sum_{j != i} W_ij lin_edge(u_j [, a_j])."""

    embedding_dim: int = Field(2, ge=1, le=64, description="Size of the learnable per-neuron embedding a_i.")
    hidden_dim: int = Field(64, ge=1, le=4096, description="Width of the hidden layers of lin_edge and lin_phi.")
    n_layers: int = Field(3, ge=2, le=10, description="Linear layers per MLP (3 = in -> h -> h -> 1).")
    activation: Literal["relu", "tanh", "leaky_relu", "silu", "elu"] = Field("relu", description="Hidden activation.")
    edge_input: Literal["u", "u_a"] = Field("u", description="lin_edge sees [u_j] or [u_j, a_j].")
    W_init_std: float = Field(0.001, ge=0.0, le=10.0, description="Std of the normal initialisation of W (0 = zeros).")
    embedding_init: Literal["ones", "randn"] = Field("ones", description="Initial embeddings.")
    mlp_init: MlpInit = Field(
        "pytorch", description="lin_edge / lin_phi start: pytorch = PyTorch's default for every layer; reference = the "
        "reference's (first layer PyTorch's default, later layers N(0, 0.1) weights and zero biases).")
    learn_embedding: LearnEmbedding = Field(
        "auto", description="auto = the embedding a is trained only when simulation.n_neuron_types > 1 (one type: "
        "a stays at its start); always = trained for one type too (the reference landscape's default).")
    low_rank_factorization: bool = Field(False, description="Learn W = W_L @ W_R instead of a dense W.")
    low_rank: int = Field(20, ge=1, le=100_000, description="Rank r of the factorisation.")
    connectivity_mask: Literal["dense", "true_support"] = Field(
        "dense", description="dense: all off-diagonal edges; true_support: only the edges of the true W (known wiring)."
    )


class TrainingConfig(_Section):
    """The trainer. Parameters the agent may mutate carry narrower ranges in agent.decision."""

    n_epochs: int = Field(1, ge=1, le=10_000, description="Epochs; exactly this many are run.")
    batch_size: int = Field(8, ge=1, le=4096, description="Frames per optimizer step. Fixed within an experiment.")
    data_augmentation_loop: int = Field(
        15, ge=1, le=1000, description="Iterations per epoch = floor(floor(simulation.n_frames * this / batch_size) * 0.2)."
    )
    data_augmentation_loop_max: int = Field(
        25, ge=1, le=1000, description="Largest data_augmentation_loop that training_time_target_min may choose (seed range 1-25)."
    )
    learning_rate_W_start: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate of W.")
    learning_rate_start: float = Field(5e-4, gt=0.0, le=1.0, description="Adam learning rate of lin_edge and lin_phi.")
    learning_rate_embedding_start: float = Field(7.5e-4, ge=0.0, le=1.0, description="Adam learning rate of the embeddings.")
    coeff_W_L1: float = Field(0.0, ge=0.0, le=1.0, description="L1 penalty on W.")
    l1_start_epoch: int = Field(
        0, ge=0, le=10_000, description="Two-phase training: epochs before this one (0-based) run without the L1 "
        "penalty on W; 0 = L1 from the first step."
    )
    coeff_edge_diff: float = Field(
        0.0, ge=0.0, le=1e6, description="Penalty on a decreasing lin_edge (monotone messages). One L2 norm over the "
        "batch and delta = u_scale/100: about 1.9 x the reference's coefficient at batch 8 (docs/agent.md)."
    )
    edge_diff_stop_epoch: int = Field(
        0, ge=0, le=10_000, description="Two-phase training (the reference's n_epochs_init): the edge-difference "
        "penalty acts only in epochs before this one (0-based); 0 = in every epoch. The reference's recipes set it "
        "equal to l1_start_epoch (penalty first, then L1)."
    )
    edge_diff_form: Literal["batch", "reference"] = Field(
        "batch", description="batch: one L2 norm over all B x N entries, shift u_scale/100 (about 1.9 x the "
        "reference's coefficient at batch 8); reference: the reference's definition, an L2 norm over the N neurons "
        "per frame summed over the B frames, shift x_norm/150 with x_norm = round(1.5 std(u)) (its coefficients "
        "apply unchanged)."
    )
    coeff_lin_phi_zero: float = Field(0.0, ge=0.0, le=1e3, description="Penalty on lin_phi(0, a) != 0.")
    penalties_per_frame: bool = Field(
        False, description="true: the L1 penalty on W and the lin_phi(0) penalty count once per frame of the batch "
        "(batch_size times per step), as the reference adds them, so its coefficients apply unchanged; false: once "
        "per optimizer step. The edge-difference penalty has its own form (edge_diff_form)."
    )
    W_L1_once_per_step: bool = Field(
        False, description="With penalties_per_frame: the L1 penalty on W still counts once per optimizer step "
        "(lin_phi(0) once per frame), as the reference's landscape trainer adds them (its LossRegularizer applies "
        "W's L1 once per iteration and its other terms per frame); its coefficients then apply unchanged."
    )
    embedding_collapse_every: int = Field(
        0, ge=0, le=10_000, description="The reference's embedding clustering (its sparsity "
        "replace_embedding_function, sparsity_freq k, fix_cluster_embedding), one-type networks only: at the end of "
        "0-based epoch e with e % k == k - 1 and e < n_epochs - k every neuron's embedding becomes the median one, "
        "lin_phi is refitted to the median of the neurons' lin_phi curves, and the next epoch trains with lin_edge and "
        "the embedding frozen (neuralgraph.embedding_collapse). 0 = never."
    )
    reset_optimizer_each_epoch: bool = Field(
        False, description="Rebuild the optimizer (and scheduler) at every epoch end, losing Adam's moments, as the "
        "reference's signal trainer does whenever its sparsity option is set (the landscape cases)."
    )
    coeff_MLP_L1: float = Field(0.0, ge=0.0, le=1.0, description="L1 penalty on MLP weights.")
    coeff_MLP_L2: float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty on MLP weights.")
    time_step: int = Field(1, description="Recurrent horizon T (Euler steps unrolled). One of 1, 4, 16, 32, 64.")
    recurrent_training: bool = Field(False, description="Unroll time_step Euler steps on the model's own predictions.")
    neural_ODE_training: bool = Field(False, description="Integrate the learned field with torchdiffeq instead.")
    recurrent_training_start_epoch: int = Field(0, ge=0, le=10_000, description="Single-step warm-up epochs before recurrence.")
    noise_recurrent_level: float = Field(0.0, ge=0.0, le=1.0, description="Noise std injected at each unrolled step.")
    recurrent_parameters: list[float] = Field(default_factory=lambda: [0.0, 0.0], description="Reserved (unused), kept for seed compatibility.")
    ode_method: Literal["dopri5", "rk4", "euler", "midpoint", "heun3"] = Field("dopri5", description="torchdiffeq solver.")
    ode_rtol: float = Field(1e-4, gt=0.0, le=1.0, description="Relative tolerance of adaptive solvers.")
    ode_atol: float = Field(1e-5, gt=0.0, le=1.0, description="Absolute tolerance of adaptive solvers.")
    ode_adjoint: bool = Field(True, description="Backpropagate with the adjoint method (less memory).")
    ode_state_clamp: float = Field(10.0, gt=0.0, le=1e6, description="Clamp the ODE state to +-this.")
    held_out_frames: int = Field(2000, ge=0, le=10_000_000, description="Frames at the end of the data never sampled by training (the test segment).")
    training_time_target_min: Optional[float] = Field(
        None, gt=0.0, le=10_000.0, description="If set, data_augmentation_loop is chosen from measured throughput to fit this."
    )
    checkpoint_every_min: float = Field(5.0, gt=0.0, le=1440.0, description="Minutes between checkpoints (also at each epoch end).")
    log_every_s: float = Field(10.0, gt=0.0, le=3600.0, description="Seconds between progress lines (rate, ETA) in the training log.")
    divergence_factor: float = Field(1e4, gt=1.0, description="Stop as diverged when the loss exceeds this times its first value.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    cuda_graph: Literal["auto", "on", "off"] = Field(
        "auto", description="Replay each optimizer step as a CUDA graph (5-9x faster on a GPU): auto = only with the "
        "packaged, unmodified training loop; on = any loop (it must be capture-safe); off = never."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of initialisation and batch sampling.")

    @model_validator(mode="after")
    def _check_modes(self) -> "TrainingConfig":
        if self.time_step not in ALLOWED_TIME_STEPS:
            raise ValueError(
                f"time_step = {self.time_step!r}: must be one of {', '.join(map(str, ALLOWED_TIME_STEPS))}"
            )
        if self.recurrent_training and self.neural_ODE_training:
            raise ValueError(
                "recurrent_training = True and neural_ODE_training = True: choose one training mode"
            )
        return self


class ClaudeConfig(_Section):
    """The exploration's own knobs (the only keys allowed in the seed's ``claude:`` section)."""

    n_epochs: int = Field(1, ge=1, le=10_000, description="Epochs of every iteration's training (copied into training.n_epochs).")
    data_augmentation_loop: int = Field(15, ge=1, le=1000, description="Starting data_augmentation_loop (copied into training).")
    n_iter_block: int = Field(8, ge=1, le=1000, description="Iterations per block (one time_step per block).")
    ucb_c: float = Field(1.414, ge=0.5, le=3.0, description="Exploration constant of the UCB score.")
    fixed_step_budget: bool = Field(
        False, description="Fixed-budget mode (the policy study): every child keeps the block root's step budget; "
                           "a decision's change of it is neutralised (agent.decision.lock_step_budget).")
    lever_below: Optional[float] = Field(
        None, gt=0.0, le=1.0,
        description="The heuristic's levers (rule 3b: the training settings the reference found decisive) stay on "
                    "while the block's best connectivity_R2 is below this; null: the converged threshold "
                    "(neuralgraph.metrics.CONVERGED_ABOVE). "
                    "`snakemake reference` sets its search's bar (search.below) here.")


class AnalysisConfig(_Section):
    """How a trained model is scored (docs/architecture.md, "metrics.json")."""

    rollout_frames: int = Field(1000, ge=10, le=1_000_000, description="Frames of the test rollout (started in the held-out segment).")
    rollout_eval_every: int = Field(10, ge=1, le=1000, description="Score every n-th rollout frame for test_R2.")
    plateau_u_range: list[float] = Field(default_factory=lambda: [0.8, 1.0], description="u range (times max |u|) whose mean lin_edge is the per-column plateau.")


class PublishedResult(_Section):
    """What the reference published for a case (its case-study and landscape pages)."""

    connectivity_R2: float = Field(description="The reference's best connectivity_R2 (its own search).")
    test_R2: Optional[float] = Field(None, description="Its rollout test_R2 (on the training trajectory), where published.")
    effective_rank_99: Optional[str] = Field(None, description="Its activity effective rank (99% variance), as published.")
    spectral_radius: Optional[float] = Field(None, description="Its spectral radius of the true W, where published.")
    seeds_above: Optional[str] = Field(None, description="Per-seed outcome where published, e.g. '8 of 10 above 0.999'.")
    where: str = Field(description="Which page or file of the reference gives these numbers.")

    def effective_rank_range(self) -> Optional[tuple[int, int]]:
        """The published effective rank as [low, high] ("12-14" -> (12, 14), "144" -> (144, 144)):
        the range a case's ``simulation.initial_state_rank`` records its W along. None where unpublished."""
        if not self.effective_rank_99:
            return None
        low, _, high = self.effective_rank_99.partition("-")
        return int(low), int(high or low)


class ReferenceCase(_Section):
    """Optional metadata of a case rebuilt from the reference (config/experiments/reference/):
    where it comes from, its published result, and its published recipe. The recipe holds
    ``training.*`` fields applied on top of the file's start config for the reference run
    (``snakemake reference``); it is checked against the training schema."""

    name: str = Field(description="Short case name (a row of docs/reference.md).")
    sources: list[str] = Field(description="The reference files this case is built from (repository paths).")
    published: PublishedResult = Field(description="The published result (connectivity_R2, test_R2, ..., where).")
    recipe: dict[str, Any] = Field(default_factory=dict, description="training.* fields of the published recipe.")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Values of seed_field the reference run trains on.")
    seed_field: Literal["simulation.seed", "training.seed"] = Field("simulation.seed", description="Which seed varies.")
    notes: str = Field("", description="Known differences from the reference, and what was inferred.")

    @model_validator(mode="after")
    def _check_recipe(self) -> "ReferenceCase":
        for dotted in self.recipe:
            section, _, key = dotted.partition(".")
            if section != "training" or key not in TrainingConfig.model_fields:
                raise ValueError(f"recipe key {dotted!r}: must be training.<field> of the training section")
        return self


class ExperimentConfig(_Section):
    """A whole experiment file."""

    description: str = Field("", description="Free text shown in reports.")
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    graph_model: GraphModelConfig = Field(default_factory=GraphModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    claude: ClaudeConfig = Field(default_factory=ClaudeConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    reference: Optional[ReferenceCase] = Field(None, description="Metadata of a reference case (not used by training).")

    @model_validator(mode="after")
    def _check_recipe_applies(self) -> "ExperimentConfig":
        """The recipe must give a valid training section (field ranges and modes)."""
        if self.reference is not None and self.reference.recipe:
            training = {**self.training.model_dump(mode="json"),
                        **{dotted.split(".", 1)[1]: value for dotted, value in self.reference.recipe.items()}}
            try:
                TrainingConfig.model_validate(training)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(f"reference.recipe: {_format_location(tuple(first['loc']))}: {first['msg']}") from None
        return self

    @model_validator(mode="after")
    def _check_frames(self) -> "ExperimentConfig":
        sim, tr = self.simulation, self.training
        n_train = sim.n_frames - tr.held_out_frames
        if n_train < tr.time_step + 6 + tr.batch_size:
            raise ValueError(
                f"training.held_out_frames = {tr.held_out_frames}: leaves {n_train} training frames of "
                f"simulation.n_frames = {sim.n_frames}; need at least time_step + batch_size + 6"
            )
        if self.analysis.rollout_frames >= tr.held_out_frames and tr.held_out_frames > 0:
            raise ValueError(
                f"analysis.rollout_frames = {self.analysis.rollout_frames}: must be < training.held_out_frames "
                f"= {tr.held_out_frames} (the rollout runs inside the held-out segment)"
            )
        if self.graph_model.low_rank_factorization and self.graph_model.low_rank > sim.n_neurons:
            raise ValueError(
                f"graph_model.low_rank = {self.graph_model.low_rank}: must be <= simulation.n_neurons = {sim.n_neurons}"
            )
        return self

    @model_validator(mode="after")
    def _check_W_L1_once_per_step(self) -> "ExperimentConfig":
        """W_L1_once_per_step qualifies penalties_per_frame: alone it would change nothing."""
        tr = self.training
        if tr.W_L1_once_per_step and not tr.penalties_per_frame:
            raise ValueError(
                "training.W_L1_once_per_step = true: needs training.penalties_per_frame = true (without it every "
                "penalty already counts once per step); allowed: W_L1_once_per_step false, or both true"
            )
        return self

    @model_validator(mode="after")
    def _check_embedding_collapse(self) -> "ExperimentConfig":
        """The collapse puts every neuron into one cluster: right for one type only."""
        every, n_types = self.training.embedding_collapse_every, self.simulation.n_neuron_types
        if every > 0 and n_types != 1:
            raise ValueError(
                f"training.embedding_collapse_every = {every}: needs simulation.n_neuron_types = 1 (got {n_types}); "
                "it replaces every neuron's embedding by one median. Use 0 for networks of several types"
            )
        return self

    @property
    def n_train_frames(self) -> int:
        """Frames [0, n_train_frames) may be sampled by training; the rest is the test segment."""
        return self.simulation.n_frames - self.training.held_out_frames

    def to_dict(self) -> dict[str, Any]:
        """Every field; the reference metadata only when present (configs without it keep their
        exact dump, hence their checkpoint keys)."""
        data = self.model_dump(mode="json")
        if data.get("reference") is None:
            data.pop("reference", None)
        return data

    def with_recipe(self) -> "ExperimentConfig":
        """This config with its reference recipe applied (itself when it has none)."""
        if self.reference is None or not self.reference.recipe:
            return self
        return with_updates(self, dict(self.reference.recipe), source="reference.recipe")

    def simulation_hash(self) -> str:
        """Hash of the simulation section: identifies the dataset an experiment needs.

        Fields that cannot change the data are left out (:func:`simulation_hash_fields`), so
        adding such a field keeps the hashes, and the datasets, of existing experiments.
        """
        return stable_hash(simulation_hash_fields(self.simulation))


def inert_training_fields(config: Mapping[str, Any]) -> set[str]:
    """Training fields that cannot change a training of ``config`` (a config dict) under the
    packaged loop and model: coeff_W_L1 when L1 starts no earlier than the last epoch ends
    (l1_start_epoch >= n_epochs, the reference's low-rank recipe), noise_recurrent_level when no
    epoch unrolls with Euler steps (single-step or neural-ODE training: every time_step 1 block),
    and the embedding's learning rate when the embedding is not trained (a one-type network unless
    graph_model.learn_embedding is always). A search that moves them spends a run
    to learn nothing; an edited loop may differ, so this is advice, not a rule."""
    sim, training = config.get("simulation") or {}, config.get("training") or {}
    graph_model = config.get("graph_model") or {}

    def value(section: Mapping[str, Any], model: type[BaseModel], name: str) -> Any:
        return section.get(name, model.model_fields[name].default)

    inert = set()
    n_epochs = value(training, TrainingConfig, "n_epochs")
    if value(training, TrainingConfig, "l1_start_epoch") >= n_epochs:
        inert.add("coeff_W_L1")
    unrolled = (value(training, TrainingConfig, "recurrent_training")
                and not value(training, TrainingConfig, "neural_ODE_training")
                and value(training, TrainingConfig, "recurrent_training_start_epoch") < n_epochs)
    if not unrolled:  # the noise is injected only into Euler-unrolled steps
        inert.add("noise_recurrent_level")
    if not embedding_is_learned(value(sim, SimulationConfig, "n_neuron_types"),
                                value(graph_model, GraphModelConfig, "learn_embedding")):
        inert.add("learning_rate_embedding_start")
    return inert


def simulation_hash_fields(sim: SimulationConfig) -> dict[str, Any]:
    """The simulation section as hashed: ``Dale_law_excitatory`` only when Dale's law is on
    (without it the field changes nothing, and experiments made before it keep their hash); ``W_draw``
    ``initial_state_seed`` and ``initial_state_rank`` only when they are not the default, for the same reason;
    with ``initial_state_rank`` also INITIAL_STATE_CANDIDATES, which decides the stream the rule keeps."""
    fields = sim.model_dump(mode="json")
    if not sim.Dale_law:
        fields.pop("Dale_law_excitatory", None)
    if sim.W_draw == "ours":  # the defaults keep the hashes (and datasets) made before the fields
        fields.pop("W_draw", None)
    for optional in ("initial_state_seed", "initial_state_rank"):
        if getattr(sim, optional) is None:
            fields.pop(optional, None)
    if sim.initial_state_rank is not None:  # how many streams the rule may try decides which it keeps
        fields["initial_state_candidates"] = INITIAL_STATE_CANDIDATES
    return fields


#: Fields that may never differ between an iteration's config and its experiment's config.
FIXED_TRAINING_FIELDS: tuple[str, ...] = ("batch_size",)


def stable_hash(data: Any) -> str:
    """Short sha256 of a JSON-serialisable value, independent of key order."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "__root__")


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _allowed_range(loc: tuple[Any, ...]) -> str:
    """'>= 1 and <= 4096' for the numeric field at ``loc`` (empty when not found)."""
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    field = model.model_fields.get(loc[-1]) if loc else None
    if field is None:
        return ""
    parts = []
    for meta in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{symbol} {getattr(meta, attr)}")
    return " and ".join(parts)


def _describe_error(err: dict[str, Any], raw: Any) -> str:
    """Turn one pydantic error into 'field = value: what is allowed'."""
    loc = tuple(err.get("loc", ()))
    field = _format_location(loc)
    kind = err.get("type", "")
    ctx = err.get("ctx", {}) or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        section = _format_location(loc[:-1]) or "top level"
        return f"{field}: unknown key in {section}; allowed keys: {', '.join(allowed)}"
    value = err.get("input", _lookup(raw, loc))
    if kind == "value_error":
        # our own validators already phrase 'field = value: rule'; prefix the section
        msg = str(ctx.get("error", err.get("msg", "")))
        section = _format_location(loc)
        return f"{section + '.' if section else ''}{msg}"
    bounds = {
        "greater_than_equal": "must be >= {ge}",
        "greater_than": "must be > {gt}",
        "less_than_equal": "must be <= {le}",
        "less_than": "must be < {lt}",
    }
    if kind in bounds:
        rule = bounds[kind].format(**ctx)
        allowed = _allowed_range(loc)
        if allowed:
            rule += f" (allowed: {allowed})"
    elif kind == "literal_error":
        rule = f"must be one of {ctx.get('expected', '')}"
    elif kind == "missing":
        return f"{field}: required field is missing"
    else:
        rule = err.get("msg", "invalid value")
    return f"{field} = {value!r}: {rule}"


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (parsed YAML) into an ExperimentConfig, or raise ConfigError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {_describe_error(err, raw)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path, base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Load and validate an experiment YAML file.

    With ``base`` (the experiment's original config), also refuse changes to what is fixed
    for a whole experiment: the simulation section and the batch size.
    """
    path = Path(path)
    try:
        text = read_text_nofollow(path)  # a link in a run folder is refused, not followed
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except LinkRefusedError as exc:
        raise ConfigError(str(exc)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    cfg = parse_config(raw, source=str(path))
    if base is not None:
        check_fixed_fields(base, cfg, source=str(path))
    return cfg


def check_fixed_fields(base: ExperimentConfig, cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Raise ConfigError when ``cfg`` changes what an experiment keeps fixed."""
    problems = []
    base_sim = base.simulation.model_dump(mode="json")
    for key, value in cfg.simulation.model_dump(mode="json").items():
        if base_sim[key] != value:
            problems.append(
                f"{source}: simulation.{key} changed from {base_sim[key]!r} to {value!r}: "
                f"the simulation is fixed for the whole experiment"
            )
    for key in FIXED_TRAINING_FIELDS:
        old, new = getattr(base.training, key), getattr(cfg.training, key)
        if old != new:
            problems.append(
                f"{source}: training.{key} changed from {old!r} to {new!r}: {key} is fixed for the whole experiment"
            )
    if problems:
        raise ConfigError("\n".join(problems))


def what_trains(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config without what cannot change a run's result (its description and reference
    metadata): two configs equal here train the same run. Fields added to the schema since a
    file was written compare at their defaults, which keep the old behaviour."""
    return cfg.model_copy(update={"description": "", "reference": None})


def config_text(cfg: ExperimentConfig) -> str:
    """A config as YAML text, every field explicit (so a run is reproducible): what dump_config writes."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def dump_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write a config as YAML atomically, every field explicit (so a run is reproducible)."""
    return atomic_write_text(path, config_text(cfg))


def with_updates(cfg: ExperimentConfig, updates: dict[str, Any], source: str = "<update>") -> ExperimentConfig:
    """Return a validated copy of ``cfg`` with dotted-key updates, e.g. {"training.time_step": 4}."""
    data = cfg.to_dict()
    for dotted, value in updates.items():
        section, _, key = dotted.partition(".")
        if not key or section not in data or not isinstance(data[section], dict):
            raise ConfigError(f"{source}: {dotted}: not a 'section.field' of the experiment config")
        data[section][key] = value
    return parse_config(data, source=source)


def parse_cli_value(text: str) -> Any:
    """A command-line value: '1e-4' -> 0.0001, '3' -> 3, 'true' -> True, '[1, 2]' -> [1, 2].

    YAML alone reads '3e-3' as a string (its floats need a dot), hence float() first.
    """
    try:
        number = float(text)
    except ValueError:
        return yaml.safe_load(text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def parse_assignments(specs: list[str], option: str = "--set") -> dict[str, Any]:
    """['training.seed=3', 'coeff_W_L1=1e-5'] -> {'training.seed': 3, 'training.coeff_W_L1': 1e-05}.

    The one reading of FIELD=VALUE options (the benchmarks' ``--set``): an undotted field is a
    training field; the values go through :func:`parse_cli_value`, and :func:`with_updates`
    checks the fields.
    """
    updates = {}
    for spec in specs:
        field, sep, value = spec.partition("=")
        field = field.strip()
        if not sep or not field:
            raise ConfigError(f"{option} {spec!r}: must be FIELD=VALUE (a config field, e.g. training.seed=3)")
        updates[field if "." in field else f"training.{field}"] = parse_cli_value(value.strip())
    return updates


def _type_name(annotation: Any) -> str:
    """'int', 'float or null', 'list[list[float]]', 'choice' (Literal) for the schema table."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(annotation, "__name__", str(annotation))


def section_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The section model of a top-level field (Optional[...] unwrapped), None for plain fields."""
    for option in typing.get_args(annotation) or (annotation,):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def describe_schema() -> str:
    """Markdown table of every field: default, type, allowed values (used by docs and --help)."""
    lines = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for section_name, section_field in ExperimentConfig.model_fields.items():
        model = section_model(section_field.annotation)
        if model is None:
            continue
        for name, field in model.model_fields.items():
            bounds = []
            for meta in field.metadata:
                for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    if getattr(meta, attr, None) is not None:
                        bounds.append(f"{sym} {getattr(meta, attr)}")
            ann = getattr(field.annotation, "__args__", None)
            if name == "time_step":
                allowed = ", ".join(map(str, ALLOWED_TIME_STEPS))
            elif ann and getattr(field.annotation, "__origin__", None) is Literal:
                allowed = ", ".join(map(str, ann))
            else:
                allowed = ", ".join(bounds) or "-"
            default = field.get_default(call_default_factory=True)
            lines.append(
                f"| {section_name}.{name} | {_type_name(field.annotation)} | {default!r} | {allowed} | {field.description or ''} |"
            )
    return "\n".join(lines)
