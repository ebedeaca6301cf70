"""Copies a real monthly series out of statsmodels into data/elec_equip.csv."""

import csv
import datetime
from importlib import resources
from pathlib import Path

# Eurostat's turnover index of electrical equipment manufacturing in the
# euro area, January 1995 to May 2016: working-day adjusted, not seasonally
# adjusted, public domain. statsmodels ships it as a CSV file, which is read
# here as text: statsmodels' own loader would need pandas.
SOURCE = "datasets/elec_equip/elec_equip.csv"
HEADER = "date,turnover\n"


def read_source() -> list[tuple[str, str]]:
    """The (ISO date, value) rows; values stay the text the package has."""
    text = (resources.files("statsmodels") / SOURCE).read_text()
    rows = list(csv.reader(text.splitlines()))[1:]
    # Dates there read like Jan-1-1995.
    return [
        (datetime.datetime.strptime(date, "%b-%d-%Y").date().isoformat(), value)
        for date, value in rows
    ]


def write_example(out_dir: Path) -> Path:
    """Writes elec_equip.csv into out_dir; returns its path."""
    path = Path(out_dir) / "elec_equip.csv"
    with open(path, "w", newline="\n") as f:
        f.write(HEADER)
        f.writelines(f"{date},{value}\n" for date, value in read_source())
    return path


def main() -> None:
    print(write_example(Path(__file__).parent))


if __name__ == "__main__":
    main()
