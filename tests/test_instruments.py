"""Instrument masters: real Dhan/Definedge samples, option lookups on small fixtures, daily cache."""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import time
import zipfile
from pathlib import Path

import pytest

import tradeflow
import tradeflow.instruments as instruments_module
from tradeflow.brokers.base import Instrument, InstrumentKind, OptionType, Segment, on_tick
from tradeflow.errors import ConfigError, TradeflowError
from tradeflow.instruments import (
    AmbiguousInstrument,
    InstrumentError,
    InstrumentMaster,
    MasterFormatError,
    MasterUnavailable,
    UnknownInstrument,
    load_master,
    parse_definedge_master,
    parse_dhan_master,
)

FIXTURES = Path(__file__).parent / "fixtures" / "instruments"
DHAN_OPTIONS = FIXTURES / "dhan_detailed_options.csv"
DEFINEDGE_NFO = FIXTURES / "definedge_nfo.csv"
TODAY = dt.date(2026, 6, 25)  # a Thursday: the 23 Jun weekly has expired, 30 Jun is nearest, 7 Jul next
LOGGER = "tradeflow.instruments"


# ---------------------------------------------------------------------- real samples


@pytest.fixture(scope="module")
def masters_dir(real_dir) -> Path:
    return real_dir / "instrument_masters"


@pytest.fixture(scope="module")
def dhan_compact(masters_dir) -> InstrumentMaster:
    return InstrumentMaster(parse_dhan_master(masters_dir / "dhan_api-scrip-master_compact_NSE-BSE_EQ-IDX.csv"))


@pytest.fixture(scope="module")
def dhan_detailed(masters_dir) -> InstrumentMaster:
    return InstrumentMaster(parse_dhan_master(masters_dir / "dhan_api-scrip-master-detailed_NSE_EQ-IDX.csv"))


@pytest.fixture(scope="module")
def dhan_futstk(masters_dir) -> InstrumentMaster:
    return InstrumentMaster(parse_dhan_master(masters_dir / "dhan_api-scrip-master-detailed_NSE_FUTSTK_sample.csv"))


@pytest.fixture(scope="module")
def definedge_cash(masters_dir) -> InstrumentMaster:
    return InstrumentMaster(parse_definedge_master(masters_dir / "definedge_nsecash_master_headerless.csv"))


def _counts(master: InstrumentMaster) -> dict[str, int]:
    out: dict[str, int] = {}
    for inst in master:
        out[inst.segment.value] = out.get(inst.segment.value, 0) + 1
    return out


def test_real_samples_parse_without_warnings(masters_dir, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        parse_dhan_master(masters_dir / "dhan_api-scrip-master_compact_NSE-BSE_EQ-IDX.csv")
        parse_dhan_master(masters_dir / "dhan_api-scrip-master-detailed_NSE_EQ-IDX.csv")
        parse_dhan_master(masters_dir / "dhan_api-scrip-master-detailed_NSE_FUTSTK_sample.csv")
        parse_definedge_master(masters_dir / "definedge_nsecash_master_headerless.csv")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_dhan_compact_real_sample(dhan_compact):
    # MANIFEST: NSE E 9,586, NSE I 119, BSE E 13,339, BSE I 72; no derivatives.
    assert _counts(dhan_compact) == {"NSE_EQ": 9586, "NSE_IDX": 119, "BSE_EQ": 13339, "BSE_IDX": 72}
    nifty = dhan_compact.get("NIFTY")
    assert (nifty.segment, nifty.kind, nifty.broker_ids, nifty.name) == (
        Segment.NSE_IDX, InstrumentKind.INDEX, {"dhan": "13"}, "Nifty 50")
    assert not nifty.tradable
    assert dhan_compact.get("BANKNIFTY").broker_ids == {"dhan": "25"}
    assert dhan_compact.by_broker_id("dhan", 25, "NSE_IDX").symbol == "BANKNIFTY"
    sbin = dhan_compact.get("SBIN", Segment.NSE_EQ)
    assert (sbin.kind, sbin.lot_size, sbin.broker_ids) == (InstrumentKind.EQUITY, 1, {"dhan": "3045"})
    # BSE lists two different indices as CAPINS: both are kept, the second named by its id.
    assert dhan_compact.get("CAPINS", "BSE_IDX").broker_ids == {"dhan": "99"}
    assert dhan_compact.get("CAPINS-846", "BSE_IDX").name == "BSE Capital Goods Industrial Solutions"


def test_dhan_compact_shares_a_symbol_between_a_share_and_its_preference_share(dhan_compact):
    assert dhan_compact.get("AARTISURF", "NSE_EQ").broker_ids == {"dhan": "19233"}  # EQ series
    assert dhan_compact.get("AARTISURF-P1", "NSE_EQ").broker_ids == {"dhan": "12121"}


@pytest.mark.parametrize(
    ("symbol", "segment", "tick"),
    [
        ("SBIN", "NSE_EQ", 0.05),  # file: 5 (paise)
        ("RELIANCE", "NSE_EQ", 0.10),  # file: 10 (paise)
        ("MRF", "NSE_EQ", 5.0),  # file: 500 (paise)
        ("SBIN", "BSE_EQ", 0.05),  # file: 5 (paise)
        ("NIFTY", "NSE_IDX", 0.05),  # file: 0.05 (rupees!)
        ("BANKNIFTY", "NSE_IDX", 0.05),
        ("SENSEX", "BSE_IDX", 0.01),  # file: 0.01 (rupees)
    ],
)
def test_dhan_compact_tick_sizes_are_rupees(dhan_compact, symbol, segment, tick):
    """Dhan stores equity ticks in paise and index ticks in rupees, in the same column."""
    assert dhan_compact.get(symbol, segment).tick_size == pytest.approx(tick)


def test_dhan_detailed_real_sample_ticks_and_circuits(dhan_detailed):
    assert _counts(dhan_detailed) == {"NSE_EQ": 9350, "NSE_IDX": 119}
    sbin = dhan_detailed.get("SBIN")
    assert (sbin.tick_size, sbin.upper_circuit, sbin.lower_circuit) == (0.05, 1169.9, 957.2)
    assert type(sbin.upper_circuit) is float
    reliance = dhan_detailed.get("RELIANCE")
    assert (reliance.tick_size, reliance.upper_circuit, reliance.lower_circuit) == (0.1, 1446.6, 1183.6)
    mrf = dhan_detailed.get("MRF")
    assert (mrf.tick_size, mrf.upper_circuit) == (5.0, 161175.0)
    nifty = dhan_detailed.get("NIFTY")
    assert (nifty.tick_size, nifty.upper_circuit, nifty.lower_circuit) == (0.05, None, None)
    # Every equity's circuit limits lie on its tick grid only if the tick is read as paise
    # (read as rupees, SBIN's 5-rupee tick would put 1169.90 off the grid).
    equities = [i for i in dhan_detailed if i.segment is Segment.NSE_EQ]
    assert all(i.upper_circuit is not None for i in equities)
    on_grid = [on_tick(i.upper_circuit, i.tick_size) and on_tick(i.lower_circuit, i.tick_size) for i in equities]
    assert all(on_grid)


def test_dhan_security_ids_repeat_across_segments(dhan_detailed):
    """Dhan id 13 is the NIFTY index and ABB's share: the segment tells them apart."""
    with pytest.raises(AmbiguousInstrument, match="pass the segment") as err:
        dhan_detailed.by_broker_id("dhan", "13")
    assert {i.symbol for i in err.value.candidates} == {"NIFTY", "ABB"}
    assert dhan_detailed.by_broker_id("dhan", 13, Segment.NSE_IDX).symbol == "NIFTY"
    assert dhan_detailed.by_broker_id("dhan", "13", "NSE_EQ").symbol == "ABB"
    with pytest.raises(UnknownInstrument, match="refresh the dhan instrument master"):
        dhan_detailed.by_broker_id("dhan", "99999999")
    with pytest.raises(UnknownInstrument, match="no definedge ids"):
        dhan_detailed.by_broker_id("definedge", "26000")


def test_dhan_futstk_real_sample(dhan_futstk):
    assert _counts(dhan_futstk) == {"NSE_FNO": 662}
    assert {i.kind for i in dhan_futstk} == {InstrumentKind.FUTSTK}
    fut = dhan_futstk.by_broker_id("dhan", "53003")
    assert fut.symbol == "360ONE31JUL25FUT"
    assert (fut.underlying, fut.expiry, fut.lot_size, fut.tick_size) == ("360ONE", dt.date(2025, 7, 31), 500, 0.1)
    assert (fut.strike, fut.option_type, fut.name) == (None, None, "360ONE JUL FUT")
    assert [f.expiry for f in dhan_futstk.futures("360ONE")] == [dt.date(2025, 7, 31), dt.date(2025, 8, 28),
                                                                dt.date(2025, 9, 30)]
    assert dhan_futstk.expiries("360ONE", "FUT") == [dt.date(2025, 7, 31), dt.date(2025, 8, 28), dt.date(2025, 9, 30)]
    abb = dhan_futstk.get("ABB30SEP25FUT")
    assert (abb.lot_size, abb.tick_size) == (125, 0.5)  # file: 50 (paise)
    # NSE's test symbols (expiry 27/11/36, dd/mm/yy) are real rows of the master and parse too.
    test_sym = dhan_futstk.by_broker_id("dhan", "36687")
    assert (test_sym.symbol, test_sym.expiry, test_sym.lot_size, test_sym.tick_size) == (
        "011NSETEST27NOV36FUT", dt.date(2036, 11, 27), 50, 0.05)
    assert all(i.expiry is not None and i.lot_size >= 1 for i in dhan_futstk)


def test_dhan_futstk_has_no_options(dhan_futstk):
    with pytest.raises(UnknownInstrument, match="has no options"):
        dhan_futstk.atm_option("RELIANCE", 1400.0, today=dt.date(2025, 7, 1))


def test_definedge_nsecash_real_sample(definedge_cash):
    assert _counts(definedge_cash) == {"NSE_EQ": 9393, "NSE_IDX": 133}
    nifty = definedge_cash.by_broker_id("definedge", "26000")
    assert (nifty.symbol, nifty.segment, nifty.kind, nifty.name, nifty.tick_size) == (
        "NIFTY", Segment.NSE_IDX, InstrumentKind.INDEX, "Nifty 50", 0.05)
    bank = definedge_cash.by_broker_id("definedge", 26009)
    assert (bank.symbol, bank.name) == ("BANKNIFTY", "Nifty Bank")
    assert definedge_cash.get("NIFTY").broker_ids == {"definedge": "26000", "definedge_symbol": "Nifty 50"}
    # Other indices keep Definedge's own name.
    assert definedge_cash.get("Nifty IT").broker_ids["definedge"] == "26008"
    sbin = definedge_cash.get("SBIN")
    assert (sbin.tick_size, sbin.lot_size, sbin.broker_ids, sbin.name) == (
        0.05, 1, {"definedge": "3045", "definedge_symbol": "SBIN-EQ"}, "STATE BANK OF INDIA")
    # orders go by Definedge's trading symbol, so the adapter finds it without asking
    assert definedge_cash.get("AARTISURF-P1").broker_ids["definedge_symbol"] == "AARTISURF-P1"
    assert definedge_cash.get("RELIANCE").tick_size == 0.1  # file: 10 with price precision 2
    assert definedge_cash.get("MRF").tick_size == 5.0  # file: 500
    assert definedge_cash.get("ZTECH").lot_size == 300  # an SME share trades in lots


def test_dhan_and_definedge_agree_on_every_shared_tick(dhan_compact, definedge_cash):
    """The two brokers' files use different units; converted, they agree on every share."""
    dhan = {i.broker_ids["dhan"]: i for i in dhan_compact if i.segment is Segment.NSE_EQ}
    dfd = {i.broker_ids["definedge"]: i for i in definedge_cash if i.segment is Segment.NSE_EQ}
    shared = dhan.keys() & dfd.keys()  # both use the exchange token
    assert len(shared) > 9000
    assert [k for k in shared if dhan[k].tick_size != dfd[k].tick_size] == []


def test_real_masters_merge_into_one(dhan_compact, definedge_cash, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        merged = InstrumentMaster(list(dhan_compact) + list(definedge_cash))
    assert merged.get("NIFTY").broker_ids == {"dhan": "13", "definedge": "26000", "definedge_symbol": "Nifty 50"}
    assert merged.get("BANKNIFTY").broker_ids == {"dhan": "25", "definedge": "26009", "definedge_symbol": "Nifty Bank"}
    assert merged.get("SBIN", "NSE_EQ").broker_ids == {"dhan": "3045", "definedge": "3045", "definedge_symbol": "SBIN-EQ"}
    assert merged.get("SBIN", "BSE_EQ").broker_ids == {"dhan": "500112"}
    assert merged.by_broker_id("definedge", "26000") is merged.by_broker_id("dhan", "13", "NSE_IDX")
    # The two files were taken on different days: one lot size differs, and that is said.
    assert any("disagree on lot_size" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------- search and get


def test_search_orders_exact_then_prefix_then_substring(dhan_compact):
    found = dhan_compact.search("sbin", limit=6)
    assert [(i.symbol, i.segment.value) for i in found[:2]] == [("SBIN", "NSE_EQ"), ("SBIN", "BSE_EQ")]
    rest = [i.symbol for i in found[2:]]
    assert rest and all(s.startswith("SBIN") for s in rest)
    assert len(dhan_compact.search("SBIN", limit=3)) == 3
    # substring matches come after every prefix match
    hits = dhan_compact.search("BANK", limit=500)
    firsts = [i.symbol.upper().startswith("BANK") or i.name.upper().startswith("BANK") for i in hits]
    assert firsts[0] and firsts.index(False) > 0 and not any(firsts[firsts.index(False):])


def test_search_by_name(dhan_compact):
    assert dhan_compact.search("Nifty 50")[0].symbol == "NIFTY"
    assert dhan_compact.search("state bank of india")[0].symbol == "SBIN"
    assert dhan_compact.search("  ") == []


def test_get_did_you_mean(dhan_compact):
    with pytest.raises(UnknownInstrument, match="did you mean") as err:
        dhan_compact.get("RELIANC")
    assert "RELIANCE" in err.value.suggestions
    with pytest.raises(UnknownInstrument) as err:
        dhan_compact.get("BANKNIFTI")
    assert err.value.suggestions[0] == "BANKNIFTY"
    assert isinstance(err.value, (LookupError, TradeflowError))


def test_get_is_case_insensitive_and_refuses_to_guess_the_exchange(dhan_compact):
    assert dhan_compact.get("nifty").symbol == "NIFTY"
    with pytest.raises(AmbiguousInstrument, match=r"NSE_EQ, BSE_EQ.*get\('SBIN', 'NSE_EQ'\)"):
        dhan_compact.get("SBIN")
    with pytest.raises(UnknownInstrument, match="only in NSE_EQ, BSE_EQ"):
        dhan_compact.get("SBIN", "NSE_FNO")
    with pytest.raises(InstrumentError, match="unknown segment"):
        dhan_compact.get("SBIN", "NSE")


# ---------------------------------------------------------------------- option fixtures


@pytest.fixture(scope="module")
def dhan_options() -> InstrumentMaster:
    return InstrumentMaster(parse_dhan_master(DHAN_OPTIONS))


@pytest.fixture(scope="module")
def definedge_options() -> InstrumentMaster:
    return InstrumentMaster(parse_definedge_master(DEFINEDGE_NFO))


@pytest.fixture(scope="module", params=["dhan", "definedge"])
def options_master(request, dhan_options, definedge_options) -> InstrumentMaster:
    return dhan_options if request.param == "dhan" else definedge_options


def test_option_symbols_name_the_expiry_day(dhan_options):
    """Dhan calls the 23 Jun weekly and the 30 Jun monthly both NIFTY-Jun2026-24000-CE."""
    weekly = dhan_options.by_broker_id("dhan", "35003")
    monthly = dhan_options.get("NIFTY30JUN2624000CE")
    assert (weekly.symbol, weekly.expiry) == ("NIFTY23JUN2624000CE", dt.date(2026, 6, 23))
    assert (monthly.kind, monthly.strike, monthly.option_type, monthly.lot_size, monthly.tick_size) == (
        InstrumentKind.OPTIDX, 24000.0, OptionType.CE, 75, 0.05)
    assert monthly.name == "NIFTY 30 JUN 24000 CALL"
    fut = dhan_options.get("NIFTY30JUN26FUT")
    assert (fut.kind, fut.tick_size, fut.strike, fut.option_type) == (InstrumentKind.FUTIDX, 0.1, None, None)
    assert dhan_options.get("RELIANCE30JUN261422.5PE").strike == 1422.5


def test_atm_option_nearest_expiry(options_master):
    ce = options_master.atm_option("NIFTY", 24012.3, today=TODAY)
    assert (ce.expiry, ce.strike, ce.option_type) == (dt.date(2026, 6, 30), 24000.0, OptionType.CE)
    pe = options_master.atm_option("nifty", 24038, kind="PE", today=TODAY)
    assert (pe.expiry, pe.strike, pe.option_type) == (dt.date(2026, 6, 30), 24050.0, OptionType.PE)
    # expiry day itself still counts as "nearest"
    assert options_master.atm_option("NIFTY", 24000, today=dt.date(2026, 6, 23)).expiry == dt.date(2026, 6, 23)


def test_atm_option_ties_take_the_lower_strike_for_calls_and_puts(options_master):
    ce = options_master.atm_option("NIFTY", 24025, "nearest", "CE", today=TODAY)
    pe = options_master.atm_option("NIFTY", 24025, "nearest", "PE", today=TODAY)
    assert ce.strike == pe.strike == 24000.0


def test_atm_option_next_and_explicit_expiry(options_master):
    nxt = options_master.atm_option("NIFTY", 24060, "next", today=TODAY)
    assert (nxt.expiry, nxt.strike) == (dt.date(2026, 7, 7), 24100.0)  # that expiry has 100-point strikes
    by_date = options_master.atm_option("NIFTY", 23940, dt.date(2026, 7, 7), "PE", today=TODAY)
    assert (by_date.expiry, by_date.strike, by_date.option_type) == (dt.date(2026, 7, 7), 23900.0, OptionType.PE)
    by_text = options_master.atm_option("NIFTY", 23940, "2026-07-07", "PE", today=TODAY)
    assert by_text == by_date
    # far from every strike: the nearest one there is
    assert options_master.atm_option("NIFTY", 30000, today=TODAY).strike == 24100.0


def test_atm_option_fractional_strikes(options_master):
    assert options_master.atm_option("RELIANCE", 1420.0, today=TODAY).strike == 1422.5
    assert options_master.atm_option("RELIANCE", 1428.75, today=TODAY).strike == 1422.5  # a tie: lower
    assert options_master.atm_option("RELIANCE", 1428.80, kind="PE", today=TODAY).strike == 1435.0


def test_atm_option_errors(options_master):
    with pytest.raises(UnknownInstrument, match="has no options") as err:
        options_master.atm_option("NIFTI", 24000, today=TODAY)
    assert err.value.suggestions == ["NIFTY"]
    with pytest.raises(UnknownInstrument, match="no NIFTY CE options expire on 2026-07-01; live expiries: 2026-06-30"):
        options_master.atm_option("NIFTY", 24000, dt.date(2026, 7, 1), today=TODAY)
    with pytest.raises(InstrumentError, match="before today"):
        options_master.atm_option("NIFTY", 24000, dt.date(2026, 6, 23), today=TODAY)
    with pytest.raises(UnknownInstrument, match="expired .* refresh the instrument master"):
        options_master.atm_option("NIFTY", 24000, today=dt.date(2026, 8, 1))
    with pytest.raises(UnknownInstrument, match="only one CE expiry"):
        options_master.atm_option("RELIANCE", 1420, "next", today=TODAY)
    with pytest.raises(InstrumentError, match="CE or PE"):
        options_master.atm_option("NIFTY", 24000, kind="XX", today=TODAY)
    with pytest.raises(InstrumentError, match="positive price"):
        options_master.atm_option("NIFTY", float("nan"), today=TODAY)
    with pytest.raises(InstrumentError, match="'nearest', 'next' or a date"):
        options_master.atm_option("NIFTY", 24000, "soonest", today=TODAY)


def test_options_futures_expiries(options_master):
    assert options_master.expiries("NIFTY") == [dt.date(2026, 6, 23), dt.date(2026, 6, 30), dt.date(2026, 7, 7)]
    assert options_master.expiries("NIFTY", "PE") == options_master.expiries("NIFTY", "CE")
    assert options_master.expiries("NIFTY", "FUT") == [dt.date(2026, 6, 30), dt.date(2026, 7, 28)]
    chain = options_master.options("NIFTY", dt.date(2026, 6, 30))
    assert [(i.strike, i.option_type.value) for i in chain[:3]] == [(23900.0, "CE"), (23900.0, "PE"), (23950.0, "CE")]
    assert len(chain) == 10
    assert len(options_master.options("NIFTY")) == 18
    assert [f.expiry for f in options_master.futures("NIFTY")] == [dt.date(2026, 6, 30), dt.date(2026, 7, 28)]
    with pytest.raises(UnknownInstrument, match="expiries listed: 2026-06-23, 2026-06-30, 2026-07-07"):
        options_master.options("NIFTY", "2026-07-14")
    with pytest.raises(UnknownInstrument, match="has no futures"):
        options_master.futures("IDEA")


def test_definedge_strikes_are_not_truncated(definedge_options, caplog):
    """The SDK's int() would make 8.25 into 8; raw / (multiplier * 10**precision) keeps it."""
    assert [i.strike for i in definedge_options.options("IDEA") if i.option_type is OptionType.CE] == [7.5, 8.0, 8.25, 9.0]
    idea = definedge_options.get("IDEA30JUN268.25CE")
    assert (idea.strike, idea.lot_size, idea.tick_size, idea.name) == (8.25, 71475, 0.05, "IDEA30JUN26C8.25")
    assert definedge_options.atm_option("IDEA", 8.3, today=TODAY).strike == 8.25
    assert definedge_options.get("RELIANCE30JUN261422.5CE").broker_ids == {
        "definedge": "50023", "definedge_symbol": "RELIANCE30JUN26C1422.5"}
    # the currency row is left out quietly (a segment tradeflow does not trade), not skipped with a warning
    assert all(i.underlying != "USDINR" for i in definedge_options)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        parse_definedge_master(DEFINEDGE_NFO)
    assert any("CDS 1" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_definedge_zip_and_fourteen_columns(tmp_path):
    text = DEFINEDGE_NFO.read_text()
    archive = tmp_path / "allmaster.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("allmaster.csv", text)
    from_zip = parse_definedge_master(archive)
    assert from_zip == parse_definedge_master(DEFINEDGE_NFO)
    assert [i.broker_ids for i in from_zip] == [i.broker_ids for i in parse_definedge_master(DEFINEDGE_NFO)]
    fourteen = tmp_path / "nfo14.csv"
    fourteen.write_text("\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()) + "\n")
    short = parse_definedge_master(fourteen)
    assert [i.symbol for i in short] == [i.symbol for i in from_zip]
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as z:
        z.writestr("nsecash.csv", text)
    with pytest.raises(MasterFormatError, match=r"no allmaster.csv \(members: nsecash.csv\)"):
        parse_definedge_master(wrong)


def test_merged_fixture_masters_share_contracts(dhan_options, definedge_options):
    merged = InstrumentMaster(list(dhan_options) + list(definedge_options))
    ce = merged.atm_option("NIFTY", 24010, today=TODAY)
    assert ce.symbol == "NIFTY30JUN2624000CE"
    assert ce.broker_ids == {"dhan": "35009", "definedge": "50009", "definedge_symbol": "NIFTY30JUN26C24000"}
    assert merged.by_broker_id("definedge", "50009") is ce
    assert merged.get("NIFTY").broker_ids == {"dhan": "13", "definedge": "26000", "definedge_symbol": "Nifty 50"}
    assert merged.get("RELIANCE").upper_circuit == 1446.6  # only Dhan's detailed file has circuits
    assert len(merged) == len(dhan_options) + 8  # Definedge adds only the IDEA options


# ---------------------------------------------------------------------- units, bad rows, bad files

COMPACT_HEADER = ("SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE,"
                  "SEM_TRADING_SYMBOL,SEM_LOT_UNITS,SEM_CUSTOM_SYMBOL,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,"
                  "SEM_OPTION_TYPE,SEM_TICK_SIZE,SEM_EXPIRY_FLAG,SEM_EXCH_INSTRUMENT_TYPE,SEM_SERIES,SM_SYMBOL_NAME")


def _compact(tmp_path: Path, *rows: str, name: str = "compact.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((COMPACT_HEADER, *rows)) + "\n")
    return path


def test_compact_derivatives_with_decimal_paise_ticks(tmp_path):
    path = _compact(
        tmp_path,
        "NSE,D,35191,OPTIDX,0,NIFTY-Jun2026-27650-CE,65.0,NIFTY 30 JUN 27650 CALL,2026-06-30 14:30:00,27650.00000,CE,5.0000,M,OP,,",
        "NSE,D,58072,FUTIDX,0,NIFTY-Aug2026-FUT,65,NIFTY AUG FUT,2026-08-25 14:30:00,-0.01000,XX,10.0000,M,FUT,,NIFTY",
        "NSE,D,60001,FUTSTK,0,BAJAJ-AUTO-Jul2026-FUT,75,BAJAJ-AUTO JUL FUT,2026-07-28 14:30:00,-0.01,XX,50.0000,M,FUT,,",
    )
    master = InstrumentMaster(parse_dhan_master(path))
    ce = master.get("NIFTY30JUN2627650CE")
    assert (ce.lot_size, ce.tick_size, ce.underlying, ce.expiry) == (65, 0.05, "NIFTY", dt.date(2026, 6, 30))
    assert master.get("NIFTY25AUG26FUT").tick_size == 0.1
    bajaj = master.get("BAJAJ-AUTO28JUL26FUT")  # a hyphen inside the underlying survives
    assert (bajaj.underlying, bajaj.tick_size) == ("BAJAJ-AUTO", 0.5)


def test_a_file_already_in_rupees_is_not_divided_again(tmp_path):
    path = _compact(
        tmp_path,
        "NSE,E,3045,EQUITY,0,SBIN,1,State Bank of India,,,,0.05,NA,ES,EQ,STATE BANK OF INDIA",
        "NSE,E,2885,EQUITY,0,RELIANCE,1,Reliance Industries,,,,0.10,NA,ES,EQ,RELIANCE INDUSTRIES LTD",
        "NSE,E,2277,EQUITY,0,MRF,1,MRF,,,,5.0,NA,ES,EQ,MRF LTD",
    )
    ticks = {i.symbol: i.tick_size for i in parse_dhan_master(path)}
    assert ticks == {"SBIN": 0.05, "RELIANCE": 0.1, "MRF": 5.0}


def test_units_without_known_instruments_follow_the_numbers(tmp_path):
    paise = _compact(tmp_path, "NSE,E,1,EQUITY,0,AAA,1,A,,,,5,NA,ES,EQ,A", "NSE,E,2,EQUITY,0,BBB,1,B,,,,1,NA,ES,EQ,B",
                     "NSE,E,3,EQUITY,0,CCC,1,C,,,,10,NA,ES,EQ,C", name="paise.csv")
    assert [i.tick_size for i in parse_dhan_master(paise)] == [0.05, 0.01, 0.1]
    rupees = _compact(tmp_path, "NSE,E,1,EQUITY,0,AAA,1,A,,,,0.05,NA,ES,EQ,A", "NSE,E,2,EQUITY,0,BBB,1,B,,,,1,NA,ES,EQ,B",
                      name="rupees.csv")
    assert [i.tick_size for i in parse_dhan_master(rupees)] == [0.05, 1.0]


def test_known_instruments_that_fit_no_unit_stop_the_parse(tmp_path):
    mixed = _compact(tmp_path, "NSE,E,3045,EQUITY,0,SBIN,1,SBI,,,,5,NA,ES,EQ,SBI",
                     "NSE,E,2885,EQUITY,0,RELIANCE,1,RIL,,,,0.10,NA,ES,EQ,RIL")
    with pytest.raises(MasterFormatError, match=r"NSE E.*cannot tell the unit.*0.1/5"):
        parse_dhan_master(mixed)


def test_unreadable_rows_are_skipped_with_one_warning(tmp_path, caplog):
    path = _compact(
        tmp_path,
        "NSE,E,3045,EQUITY,0,SBIN,1,SBI,,,,5,NA,ES,EQ,SBI",
        "NSE,E,1,EQUITY,0,BADLOT,abc,Bad lot,,,,5,NA,ES,EQ,X",
        "NSE,E,2,EQUITY,0,NOTICK,1,No tick,,,,0,NA,ES,EQ,X",
        "NSE,D,3,OPTIDX,0,NIFTY-Jun2026-24000-XX,75,NIFTY 30 JUN 24000,2026-06-30,24000,XX,5,M,OP,,",
        "NSE,D,4,OPTIDX,0,NIFTY-Jun2026-0-CE,75,NIFTY 30 JUN 0 CALL,2026-06-30,-0.01,CE,5,M,OP,,",
        "NSE,D,5,FUTIDX,0,NIFTY-Jun2026-FUT,75,NIFTY JUN FUT,31/31/2026,-0.01,XX,10,M,FUT,,",
        "NSE,D,6,FUTIDX,0,NIFTY-Jun2026-FUT,75,NIFTY JUN FUT,,-0.01,XX,10,M,FUT,,",
        "MCX,M,7,FUTCOM,0,GOLD-Jun2026-FUT,1,GOLD JUN FUT,2026-06-30,-0.01,XX,100,M,FUT,,",
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = parse_dhan_master(path)
    assert [i.symbol for i in out] == ["SBIN"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 6 of 8 rows" in warnings[0]
    for reason in ("lot size", "tick size", "not CE or PE", "positive strike", "unreadable expiry", "without an expiry"):
        assert reason in warnings[0]
    assert any("MCX M 1" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_missing_columns_are_named(tmp_path):
    compact = tmp_path / "c.csv"
    compact.write_text("SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_TRADING_SYMBOL\nNSE,E,1,SBIN\n")
    with pytest.raises(MasterFormatError, match="Dhan compact master: missing column.*SEM_INSTRUMENT_NAME.*SEM_TICK_SIZE"):
        parse_dhan_master(compact)
    detailed = tmp_path / "d.csv"
    detailed.write_text(DHAN_OPTIONS.read_text().replace("LOT_SIZE", "LOTS", 1))
    with pytest.raises(MasterFormatError, match=r"Dhan detailed master: missing column\(s\) LOT_SIZE"):
        parse_dhan_master(detailed)
    other = tmp_path / "o.csv"
    other.write_text("symbol,token\nSBIN,3045\n")
    with pytest.raises(MasterFormatError, match="not a Dhan master"):
        parse_dhan_master(other)
    narrow = tmp_path / "n.csv"
    narrow.write_text("NSE,3045,SBIN,SBIN-EQ,EQ\n")
    with pytest.raises(MasterFormatError, match="expected 14 or 15 columns.*found 5"):
        parse_definedge_master(narrow)


def test_dhan_parser_takes_a_frame():
    import pandas as pd

    frame = pd.read_csv(DHAN_OPTIONS, dtype=str, keep_default_na=False)
    expected = parse_dhan_master(DHAN_OPTIONS)
    assert parse_dhan_master(frame) == expected
    # read with pandas' defaults (numbers, NaN for empty cells): the same instruments
    loose = parse_dhan_master(pd.read_csv(DHAN_OPTIONS))
    assert loose == expected
    assert [i.broker_ids for i in loose] == [i.broker_ids for i in expected]


def test_a_100k_row_master_parses_quickly(tmp_path):
    header = DHAN_OPTIONS.read_text().splitlines()[0]
    tail = "N,N,N,NA,A,0,0,0,0,0,0,0,0,0"
    lines = [header]
    sid = 100000
    for u in range(100):
        for week in range(10):
            expiry = dt.date(2026, 7, 2) + dt.timedelta(days=7 * week)
            for strike in range(20000, 25000, 100):
                for t in ("CE", "PE"):
                    sid += 1
                    lines.append(f"NSE,D,{sid},NA,OPTSTK,{u},STK{u},STK{u}-{expiry:%b%Y}-{strike}-{t},STK{u} {strike} {t},"
                                 f"OP,NA,50,{expiry} 14:30:00,{strike}.00000,{t},5.0000,W,{tail}")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    assert len(lines) == 100_001
    start = time.perf_counter()
    master = InstrumentMaster(parse_dhan_master(path))
    elapsed = time.perf_counter() - start
    assert len(master) == 100_000
    assert elapsed < 6.0, f"parsing and indexing 100k rows took {elapsed:.1f}s"


# ---------------------------------------------------------------------- the daily cache


def _serve(httpserver, path: str, body: bytes, status: int = 200) -> str:
    httpserver.clear_all_handlers()
    httpserver.expect_request(path).respond_with_data(body, status=status)
    return httpserver.url_for(path)


def _requests(httpserver) -> int:
    return len(httpserver.log)


def test_load_master_downloads_once_per_day(httpserver, monkeypatch, tmp_path):
    url = _serve(httpserver, "/api-scrip-master-detailed.csv", DHAN_OPTIONS.read_bytes())
    monkeypatch.setenv("DHAN_MASTER_URL", url)
    day1, day2 = dt.date(2026, 6, 25), dt.date(2026, 6, 26)
    first = load_master("dhan", today=day1)
    assert _requests(httpserver) == 1
    folder = tmp_path / "data" / "instruments"  # settings().data_dir, set by conftest
    assert sorted(p.name for p in folder.iterdir()) == ["dhan-2026-06-25.csv"]
    again = load_master("dhan", today=day1)
    assert _requests(httpserver) == 1  # same IST day: the file is reused
    assert len(again) == len(first) and again.get("NIFTY30JUN2624000CE").broker_ids == {"dhan": "35009"}
    load_master("dhan", today=day2)
    assert _requests(httpserver) == 2  # a new day: one download
    assert sorted(p.name for p in folder.iterdir()) == ["dhan-2026-06-25.csv", "dhan-2026-06-26.csv"]
    load_master("dhan", today=day2, refresh=True)
    assert _requests(httpserver) == 3
    load_master("dhan", today=dt.date(2026, 6, 29))
    # today's file and one earlier fallback are kept; older ones are deleted
    assert sorted(p.name for p in folder.iterdir()) == ["dhan-2026-06-26.csv", "dhan-2026-06-29.csv"]


def test_load_master_falls_back_to_yesterday_when_the_download_fails(httpserver, monkeypatch, tmp_path, caplog):
    data = tmp_path / "elsewhere"
    url = _serve(httpserver, "/allmaster.zip", _zip(DEFINEDGE_NFO.read_text()))
    monkeypatch.setenv("DEFINEDGE_MASTER_URL", url)
    good = load_master("definedge", data_dir=data, today=dt.date(2026, 6, 25))
    assert (data / "instruments" / "definedge-2026-06-25.zip").is_file()
    _serve(httpserver, "/allmaster.zip", b"busy", status=503)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fallback = load_master("definedge", data_dir=data, today=dt.date(2026, 6, 26))
    assert list(fallback) == list(good)
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "HTTP 503" in message and "definedge-2026-06-25.zip" in message
    assert not (data / "instruments" / "definedge-2026-06-26.zip").exists()
    # a 200 answer that is not a master (an HTML error page) is refused the same way
    _serve(httpserver, "/allmaster.zip", b"<html>maintenance</html>")
    assert list(load_master("definedge", data_dir=data, today=dt.date(2026, 6, 26))) == list(good)
    assert sorted(p.name for p in (data / "instruments").iterdir()) == ["definedge-2026-06-25.zip"]  # no temp files


def test_load_master_with_nothing_cached_says_what_failed(httpserver, monkeypatch, tmp_path):
    url = _serve(httpserver, "/master.csv", b"oops", status=500)
    monkeypatch.setenv("DHAN_MASTER_URL", url)
    with pytest.raises(MasterUnavailable, match=r"no dhan instrument master: downloading .* failed: HTTP 500.*nothing cached"):
        load_master("dhan", today=TODAY)
    with pytest.raises(MasterUnavailable, match="fetch=False and no file is cached"):
        load_master("dhan", fetch=False, today=TODAY)


def test_load_master_unreachable_server(tmp_path):
    # conftest points DHAN_MASTER_URL at a closed local port
    with pytest.raises(MasterUnavailable, match="downloading the dhan master from http://127.0.0.1:9/ failed"):
        load_master("dhan", data_dir=tmp_path, today=TODAY)


def test_load_master_when_the_folder_cannot_be_written(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    with pytest.raises(MasterUnavailable, match="cannot save the dhan master"):
        load_master("dhan", data_dir=blocked, today=TODAY)


def test_load_master_without_fetching_uses_the_newest_file(tmp_path, caplog):
    folder = tmp_path / "instruments"
    folder.mkdir()
    (folder / "dhan-2026-06-20.csv").write_bytes(b"broken")
    (folder / "dhan-2026-06-24.csv").write_bytes(DHAN_OPTIONS.read_bytes())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        master = load_master("dhan", data_dir=tmp_path, fetch=False, today=TODAY)
    assert master.get("NIFTY").broker_ids == {"dhan": "13"}
    assert any("dhan-2026-06-24.csv (fetch=False)" in r.getMessage() for r in caplog.records)


def test_load_master_refuses_bad_brokers_and_package_folders():
    with pytest.raises(InstrumentError, match="did you mean dhan"):
        load_master("dhna")
    with pytest.raises(ConfigError, match="inside the installed tradeflow package"):
        load_master("dhan", data_dir=Path(tradeflow.__file__).parent, fetch=False)


def _zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("allmaster.csv", text)
    return buffer.getvalue()


# ---------------------------------------------------------------------- surface


def test_exported_names():
    assert sorted(instruments_module.__all__) == sorted([
        "BROKERS", "InstrumentMaster", "parse_dhan_master", "parse_definedge_master", "load_master",
        "InstrumentError", "UnknownInstrument", "AmbiguousInstrument", "MasterFormatError", "MasterUnavailable",
    ])
    for name in instruments_module.__all__:
        assert hasattr(instruments_module, name)
    assert issubclass(MasterUnavailable, TradeflowError)


def test_repr_and_iteration(dhan_options):
    assert repr(dhan_options) == "InstrumentMaster(28 instruments: NSE_EQ 1, NSE_FNO 26, NSE_IDX 1)"
    assert all(isinstance(i, Instrument) for i in dhan_options)
    assert not any(isinstance(i.strike, float) and math.isnan(i.strike) for i in dhan_options)
