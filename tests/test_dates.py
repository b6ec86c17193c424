"""The date-normalisation generator (hf_attn_variants_research/dates.py), checked by an independent parser: month and
weekday names from a table written here by hand (not babel's CLDR data), filler words dropped, then
``dateutil.parser`` with the day-first convention of the row's locale and the 1950 pivot for
two-digit years. Also: every format occurs, the generator is deterministic, splits are disjoint."""

from __future__ import annotations

import datetime
import re
import unicodedata

import pytest
from dateutil import parser as dateparser

from hf_attn_variants_research import dates

# hand-written month names (wide), in month order
MONTHS = {
    "en": "january february march april may june july august september october november december",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "de": "januar februar märz april mai juni juli august september oktober november dezember",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
}
IRREGULAR_ABBREVIATIONS = {"nl": {"mrt": 3}}  # abbreviations that are not a prefix of the month's name
WEEKDAYS = {  # dropped: the date alone fixes the label
    "en": "monday tuesday wednesday thursday friday saturday sunday",
    "fr": "lundi mardi mercredi jeudi vendredi samedi dimanche",
    "de": "montag dienstag mittwoch donnerstag freitag samstag sonntag",
    "es": "lunes martes miércoles jueves viernes sábado domingo",
    "it": "lunedì martedì mercoledì giovedì venerdì sabato domenica",
    "pt": "segunda-feira terça-feira quarta-feira quinta-feira sexta-feira sábado domingo",
    "nl": "maandag dinsdag woensdag donderdag vrijdag zaterdag zondag",
}
FILLERS = {"de", "le", "the", "of"}
MONTH_FIRST = {"en_US"}  # numeric day/month order: month first only in the US


def _plain(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if not unicodedata.combining(c))


def _month(word: str, language: str) -> int | None:
    word = _plain(word.rstrip("."))
    if word in IRREGULAR_ABBREVIATIONS.get(language, {}):
        return IRREGULAR_ABBREVIATIONS[language][word]
    names = [_plain(n) for n in MONTHS[language].split()]
    hits = [i + 1 for i, name in enumerate(names) if len(word) >= 3 and name.startswith(word)]
    return hits[0] if len(hits) == 1 else None


class PivotYears(dateparser.parserinfo):
    """Two-digit years: 50-99 -> 1950-1999, 00-49 -> 2000-2049 (the generator's range)."""

    def convertyear(self, year, century_specified=False):
        if year < 100 and not century_specified:
            return year + (1900 if year >= 50 else 2000)
        return year


def check(source: str, locale: str) -> datetime.date:
    """Parse a generated source independently of the generator."""
    language = locale.split("_")[0]
    weekdays = {_plain(w) for w in WEEKDAYS[language].split()}
    words = []
    for word in re.split(r"[\s,]+", source.strip()):
        plain = _plain(word)
        if not plain or plain in FILLERS or plain in weekdays:
            continue
        month = _month(word, language) if re.search(r"[^\W\d_]", word) and not re.match(r"^\d", word) else None
        if month is not None:
            words.append(f"month{month}")
            continue
        words.append(re.sub(r"^(\d+)(st|nd|rd|th|er)$", r"\1", plain).rstrip("."))
    text = " ".join(words)
    month_word = re.search(r"month(\d+)", text)
    if month_word:  # "3 month3 2021": day, month and year are separate tokens
        day = next(int(w) for w in words if w.isdigit() and len(w) <= 2)
        year = next(int(w) for w in words if w.isdigit() and len(w) == 4)
        return datetime.date(year, int(month_word.group(1)), day)
    return dateparser.parse(text, dayfirst=locale not in MONTH_FIRST, parserinfo=PivotYears()).date()


@pytest.fixture(scope="module")
def rows() -> dict[str, list[str]]:
    return dates.generate(3000, [dates.DATES_SEED, 99])


def test_every_label_agrees_with_an_independent_parse(rows):
    wrong = [(s, loc, t) for s, t, loc in zip(rows["source"], rows["target"], rows["locale"])
             if check(s, loc).isoformat() != t]
    assert wrong == [], f"{len(wrong)} rows disagree, e.g. {wrong[:5]}"


def test_the_checker_can_fail():
    assert check("3/4/21", "en_US") == datetime.date(2021, 3, 4)
    assert check("03/04/2021", "fr_FR") == datetime.date(2021, 4, 3)
    assert check("3 mrt 1999", "nl_NL") == datetime.date(1999, 3, 3)
    assert check("le 1er mars 1960", "fr_FR").isoformat() != "1960-03-02"


def test_all_formats_occur_with_iso_targets(rows):
    assert {(loc, f) for loc, f in zip(rows["locale"], rows["format"])} == set(dates.formats())
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", t) for t in rows["target"])
    years = [int(t[:4]) for t in rows["target"]]
    assert min(years) >= 1950 and max(years) <= 2049 and len(set(years)) > 90
    assert len(set(rows["source"])) == len(rows["source"])


def test_deterministic_and_disjoint_splits():
    assert dates.generate(50, [1, 2]) == dates.generate(50, [1, 2])
    assert dates.generate(50, [1, 2]) != dates.generate(50, [1, 3])
    data = dates.build_dates({"train": 300, "validation": 50, "test": 50})
    assert [len(data[s]) for s in ("train", "validation", "test")] == [300, 50, 50]
    train = set(data["train"]["source"])
    assert not train & set(data["test"]["source"]) and not train & set(data["validation"]["source"])
