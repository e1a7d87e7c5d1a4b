"""The hw_config power model: its numbers are benchmarks/power_fit.py's fit of published
measurements (per-rail idle power of a Speck2f dev kit, the six Speck rows of Yao et al. 2024
Table 1), its band contains every published operating point, and the loader checks the new fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.errors import ChipSpecError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "power_fit.py"
RESULT = ROOT / "benchmarks" / "results" / "power_fit.json"


def _script():
    spec = importlib.util.spec_from_file_location("power_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


power_fit = _script()
DYNAMIC = ("energy_per_spike_nj", "energy_per_spike_low_nj", "energy_per_spike_high_nj",
           "energy_per_synop_nj", "energy_per_input_event_nj", "resting_mw")


@pytest.mark.parametrize("chip", ["speck2f", "speck2e"])
def test_speck_hw_configs_hold_the_scripts_fit(chip):
    fitted = power_fit.hw_config_values()
    power = load_chip_spec(chip).power
    for field in DYNAMIC:
        assert getattr(power, field) == fitted[field], field
    assert power.idle_rail_mw == fitted["idle_rail_mw"]
    assert list(power.processor_rails) == fitted["processor_rails"]


def test_dynapcnn_has_speck_processor_terms_and_no_rails():
    fitted, power = power_fit.hw_config_values(), load_chip_spec("dynapcnn").power
    for field in DYNAMIC:
        assert getattr(power, field) == fitted[field], field
    assert power.idle_rail_mw == {} and power.processor_rails == ()
    assert power.other_rails_idle_mw is None
    assert "ASSUMED" in power.dynamic_source and "no per-rail" in power.idle_rails_source


def test_committed_json_is_the_scripts_output():
    assert json.loads(RESULT.read_text()) == json.loads(json.dumps(power_fit.result()))


def test_the_fit_is_the_median_and_the_band_the_extremes_of_the_six_rows():
    rows = power_fit.OPERATING_POINTS
    assert len(rows) == 6 and {(d, s) for d, s, *_ in rows} == {
        (d, s) for d in ("DVS Gesture", "Gait-day", "Gait-night") for s in ("vanilla", "attention")}
    # (P - 0.42 mW) / (spikes / 0.54 s), by hand for DVS Gesture vanilla: 9.08 mW x 0.54 us = 4.9032 nJ
    assert power_fit.energies_nj(0.54)[0] == pytest.approx(9.08 * 0.54)
    fit = power_fit.fit()
    energies = sorted(row["energy_per_spike_nj"] for row in fit["rows"])
    assert fit["energy_per_spike_nj"] == pytest.approx((energies[2] + energies[3]) / 2)
    assert (fit["energy_per_spike_low_nj"], fit["energy_per_spike_high_nj"]) == (energies[0], energies[-1])
    # read per second instead of per 540 ms sample, every energy is 1 / 0.54 times larger
    per_second = power_fit.fit(1.0)
    assert per_second["energy_per_spike_nj"] == pytest.approx(fit["energy_per_spike_nj"] / 0.54)


@pytest.mark.parametrize("chip", ["speck2f", "speck2e"])
def test_the_band_contains_every_published_operating_point(chip):
    power = load_chip_spec(chip).power
    for dataset, snn, total, spikes, _ in power_fit.OPERATING_POINTS:
        rate = spikes * 1e6 / power_fit.SAMPLE_S
        low, high = power.band_mw(rate, 0.0, 0.0)
        assert low <= total <= high, (dataset, snn, low, total, high)
        assert low <= power.power_mw(rate, 0.0, 0.0) <= high


def test_processor_rails_are_the_published_resting_power_and_the_devkit_adds_the_rest():
    power = load_chip_spec("speck2f").power
    assert power.idle_rail_mw == {"VDD_IO": 0.0617, "VDD_RAM": 0.0517, "VDD_LOGIC": 0.367,
                                  "VDD_PIXEL_DIGITAL": 0.0789, "VDD_PIXEL_ANALOG": 0.6109}
    processor = sum(power.idle_rail_mw[rail] for rail in power.processor_rails)
    assert processor == pytest.approx(0.4187) and round(processor, 2) == power.resting_mw == 0.42
    assert power.other_rails_idle_mw == pytest.approx(0.0617 + 0.0789 + 0.6109)
    for text in (power.idle_rails_source, power.resting_source, power.dynamic_source):
        assert "S3" in text or "S6" in text
    assert "UNVERIFIED" in power.dynamic_source and "540 ms" in power.dynamic_source


def _write(tmp_path: Path, replace: tuple[str, str]) -> Path:
    text = Path(load_chip_spec("speck2f").path).read_text()
    assert replace[0] in text, replace[0]
    path = tmp_path / "mychip.toml"
    path.write_text(text.replace(*replace))
    return path


@pytest.mark.parametrize("old,new,match", [
    ("VDD_IO = 0.0617", "VDD_IO = -0.0617",
     r"\[power\] idle_rail_mw has entry VDD_IO = -0.0617, outside the allowed range >= 0"),
    ("VDD_IO = 0.0617", "VDD_IO = nan", r"idle_rail_mw has entry VDD_IO = nan"),
    ("VDD_IO = 0.0617", 'VDD_IO = "61.7 uW"', r"\[power\] idle_rail_mw: expected a table of name = number"),
    ("VDD_IO = 0.0617", "VDD_IO = 9223372036854775807", r"VDD_IO = 9223372036854775807 has no exact float"),
    ('processor_rails = ["VDD_RAM", "VDD_LOGIC"]', 'processor_rails = ["VDD_RAM", "VDD_CORE"]',
     r"\[power\] processor_rails \['VDD_CORE'\] are not in idle_rail_mw"),
    ('processor_rails = ["VDD_RAM", "VDD_LOGIC"]', 'processor_rails = ["VDD_RAM", "VDD_RAM"]',
     r"processor_rails \['VDD_RAM', 'VDD_RAM'\] names a rail twice"),
    ('processor_rails = ["VDD_RAM", "VDD_LOGIC"]', "processor_rails = []",
     r"\[power\] processor_rails is empty; name the rails of idle_rail_mw"),
    ("energy_per_spike_low_nj = 2.91", "energy_per_spike_low_nj = 5.0",
     r"energy_per_spike_low_nj 5.0 <= energy_per_spike_nj 4.42 .* does not hold"),
    ("energy_per_spike_high_nj = 7.59", "energy_per_spike_high_nj = -1.0",
     r"energy_per_spike_high_nj = -1.0, outside the allowed range >= 0"),
    ("energy_per_spike_high_nj = 7.59\n", "",
     r"\[power\] is missing field 'energy_per_spike_high_nj'"),
    ("[power.idle_rail_mw]", "[power.idle_rail_mw]\nVDD_EXTRA = [1.0]",
     r"idle_rail_mw: expected a table of name = number"),
])
def test_power_fields_are_checked_naming_file_section_and_field(tmp_path, old, new, match):
    path = _write(tmp_path, (old, new))
    with pytest.raises(ChipSpecError, match=match) as info:
        load_chip_spec(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_chip_without_measured_rails_gets_no_devkit_figure_and_the_report_says_why():
    from asa_deploy.report import build, render

    power = build._power(load_chip_spec("dynapcnn"), 100.0, 1000.0, 50.0, window_s=0.1)
    assert power["devkit"] is None and power["band_mw"][0] < power["total_mw"] < power["band_mw"][1]
    text = " ".join(b.text for b in render._power({"power": power}) if isinstance(b, render.Para))
    assert "No per-rail idle power for this chip, so no dev-kit total" in text
    assert "no per-rail idle power of a DYNAP-CNN dev kit was found" in text
    measured = build._measured({"power_mw": {"VDD_RAM": 0.1, "VDD_LOGIC": float("nan")}}, 0.1, power)
    rows = {row["rail"]: row for row in measured["side_by_side"]}
    assert rows["VDD_RAM"]["model_mw"] is None and rows["VDD_LOGIC"]["measured_mw"] is None
    assert measured["total_mw"] == pytest.approx(0.1) and measured["estimate_over_measured"] is None
    assert "no dev-kit estimate to compare" in " ".join(measured["side_by_side_notes"])
    bad = build._measured({"power_mw": {"VDD_RAM": "0.1 mW"}}, 0.1, power)
    assert "rails that are not numbers (mW): {'VDD_RAM': '0.1 mW'}" in bad["error"]
