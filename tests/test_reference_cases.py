"""The reference's published cases (config/experiments/reference/, issue 18): each file validates,
names the source of every field that differs from our defaults, carries the published number,
and its published recipe is reachable by the agent as a chain of allowed mutations from the
case's start config."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from agent.decision import ALLOWED_PARAMETERS, Decision, DecisionInvalid, validate_decision
from agent_helpers import context
from agent.tree import NodeRecord
from tiny_configs import REPO
from neuralgraph.config import ExperimentConfig, load_config

CASE_DIR = REPO / "config" / "experiments" / "reference"
CASES = sorted(CASE_DIR.glob("*.yaml"))
#: the regimes issue 18 names: low-rank, chaotic 10k, Dale, noise, sparse 50%, fill 80/90%, g=1, g=2 10k/30k, N=1000 30k
REQUIRED = {"lowrank", "chaotic", "dale", "noise", "sparse50", "fill80", "fill90", "gain1", "gain2_10k", "gain2_30k",
            "n1000_30k"}
SECTIONS = ("simulation", "graph_model", "training", "claude", "analysis")


#: Spectral radius of W its experiment logs print (signal_landscape_Claude_analysis.md: every N = 100 chaotic,
#: noise and gain block 1.065, N = 1000 block 18 1.046; its low-rank block 2, seed 42, 0.952): the cases that draw
#: the reference's own W must give these, or they train another matrix than the published number's.
LOGGED_SPECTRAL_RADIUS = {"chaotic": 1.065, "noise": 1.065, "gain1": 1.065, "gain2_10k": 1.065, "gain2_30k": 1.065,
                          "n1000_30k": 1.046, "lowrank": 0.952}


@pytest.mark.parametrize("case", sorted(LOGGED_SPECTRAL_RADIUS))
def test_a_case_on_the_reference_w_trains_the_matrix_its_log_describes(case):
    import numpy as np

    from neuralgraph.simulate import _rngs, make_connectivity

    cfg = load_config(CASE_DIR / f"{case}.yaml")
    assert cfg.simulation.W_draw == "reference" and cfg.reference.seed_field == "simulation.seed"
    seed = cfg.reference.seeds[0]
    assert seed == 42  # the landscape's default seed; the low-rank case study's first
    sim = cfg.simulation.model_copy(update={"seed": seed})
    W = make_connectivity(sim, _rngs(seed)["connectivity"])
    assert np.max(np.abs(np.linalg.eigvals(W))) == pytest.approx(LOGGED_SPECTRAL_RADIUS[case], abs=5e-4)


def test_the_low_rank_case_runs_its_case_studys_ten_seeds():
    assert load_config(CASE_DIR / "lowrank.yaml").reference.seeds == [42, 256, 500, 99, 2000, 314, 137, 7, 1000, 3000]


def test_the_low_rank_case_records_each_w_along_a_u0_of_its_published_rank():
    """The case study reports its seeds' activity at effective rank 12-14: the trajectory rule's
    range is that published number, not a second spelling of it."""
    cfg = load_config(CASE_DIR / "lowrank.yaml")
    assert cfg.reference.published.effective_rank_range() == (12, 14)
    assert tuple(cfg.simulation.initial_state_rank) == (12, 14)
    assert cfg.simulation.initial_state_seed is None


@pytest.mark.parametrize("text, expected", [("12-14", (12, 14)), ("144", (144, 144)), (None, None)])
def test_a_published_effective_rank_reads_as_a_range(text, expected):
    published = load_config(CASE_DIR / "lowrank.yaml").reference.published.model_copy(update={"effective_rank_99": text})
    assert published.effective_rank_range() == expected


def test_every_published_regime_has_a_case_file():
    assert REQUIRED <= {path.stem for path in CASES}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case_validates_and_carries_the_published_number_and_recipe(path: Path):
    cfg = load_config(path)
    ref = cfg.reference
    assert ref is not None and ref.name == path.stem
    assert 0.0 <= ref.published.connectivity_R2 <= 1.0 and ref.published.where
    assert ref.sources and ref.seeds
    recipe_cfg = cfg.with_recipe()  # validates the recipe applied
    for dotted, value in ref.recipe.items():
        assert getattr(recipe_cfg.training, dotted.split(".", 1)[1]) == pytest.approx(value)
    assert cfg.simulation.n_neuron_types == 1 and cfg.graph_model.W_init_std == 1.0  # the reference's regime and init
    assert cfg.training.edge_diff_form == "reference"


def _non_default_fields(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    defaults = ExperimentConfig().to_dict()
    ours = cfg.to_dict()
    return [(section, key) for section in SECTIONS for key, value in ours[section].items()
            if value != defaults[section][key]]


def _line_of(text: str, section: str, key: str) -> str:
    block = re.search(rf"^{section}:\n((?:[ #].*\n|\n)*)", text, flags=re.M)
    assert block, f"section {section} not found"
    match = re.search(rf"^  {key}:.*$", block.group(1), flags=re.M)
    assert match, f"{section}.{key} differs from our default but is not written in the file"
    return match.group(0)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_non_default_field_names_its_source(path: Path):
    cfg = load_config(path)
    text = path.read_text()
    tags = {re.match(r"\[(\w+)\]", source).group(1) for source in cfg.reference.sources}
    fields = _non_default_fields(cfg)
    assert fields
    for section, key in fields:
        line = _line_of(text, section, key)
        comment = line.split("#", 1)[1] if "#" in line else ""
        named = {tag for tag in re.findall(r"\[(\w+)\]", comment)}
        assert (named & tags) or comment.strip().startswith("ours"), \
            f"{path.name}: {section}.{key} differs from our default without a source: {line!r}"
        assert named <= tags, f"{path.name}: {section}.{key} names an unlisted source {named - tags}"


# ----------------------------------------------------------------------------- the agent reaches each recipe

def _node(cfg_dict: dict, id: int) -> NodeRecord:
    return NodeRecord(id=id, parent=None, block=1, iteration=id, time_step=1, dir=f"iter_{id:03d}",
                      config=cfg_dict, metrics={"connectivity_R2": 0.5}, mutation=None, strategy="exploit")


def _decision(parameter: str, old, new) -> Decision:
    return Decision.model_validate({
        "parent": 1, "strategy": "exploit",
        "log": {"outcome": "partial", "mode": "exploit", "parent_rule": "r", "observation": "o", "next_parent": 1},
        "memory_update": {"emerging_observations": "notes"},
        "config_mutation": {"parameter": parameter, "old": old, "new": new}})


def _chain_applies(cfg: ExperimentConfig, steps: list[tuple[str, object]]) -> bool:
    """Whether the agent's validator accepts every mutation of ``steps`` in this order."""
    data = cfg.to_dict()
    for name, new in steps:
        ctx = context([_node(data, 1)])
        try:
            validate_decision(_decision(name, data["training"][name], new), ctx)
        except DecisionInvalid:
            return False
        data = {**data, "training": {**data["training"], name: new}}
    return True


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_published_recipe_is_a_chain_of_allowed_mutations_from_the_start_config(path: Path):
    cfg = load_config(path)
    steps = [(dotted.split(".", 1)[1], value) for dotted, value in cfg.reference.recipe.items()]
    assert all(name in ALLOWED_PARAMETERS for name, _ in steps), "a recipe field the agent may not mutate"
    assert any(_chain_applies(cfg, list(order)) for order in itertools.permutations(steps)), \
        f"{path.name}: no order of {steps} passes the agent's validator"
    # and the agent can come back to every start value it may mutate (the start lies inside the ranges)
    for name, rule in ALLOWED_PARAMETERS.items():
        value = getattr(cfg.training, name)
        assert rule.check(float(value)) is None, f"{path.name}: start {name} = {value} outside the agent's range"


def test_a_recipe_outside_the_training_schema_is_refused_naming_the_field(tmp_path):
    raw = yaml.safe_load((CASE_DIR / "lowrank.yaml").read_text())
    raw["reference"]["recipe"] = {"training.learning_rate_W_start": 5.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"reference.recipe: learning_rate_W_start: Input should be less than or equal to 1"):
        load_config(bad)
    raw["reference"]["recipe"] = {"simulation.seed": 3}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"recipe key 'simulation.seed': must be training.<field>"):
        load_config(bad)
