"""Tables for a terminal of any width, shared by `vaxelbox` and `vaxelctl`: nothing is ever cut.

Rich shrinks a table that is too wide by cutting cells (`00:15:…`) or by folding
them anywhere, a MAC over three lines included. An installer reads and copies
MACs and user ids from these tables, so the widths are planned here instead:

- `whole` columns (a MAC, an AoR, an installer's name) never break;
- `words` columns (lists of users, free text naming a MAC) break only between words;
- every other column wraps between words and never breaks a word of up to WHOLE_TOKEN cells (an
  address host:port, an IP, a vendor, a model, a version, a number, a date); only a longer word
  (a SIP contact, a URN) folds;
- a header breaks only between its words.

When no table keeps all that at the terminal's width, the rows are printed as records
(`name  value` lines), where a value wraps between words beside its name.
"""

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when a table prints: the agent imports this module, never prints
    from rich.console import Console

PADDING = 2  # one space either side of a cell
FOLD_FLOOR = 3  # the narrowest a foldable column gets, in terminal cells
WHOLE_TOKEN = 40  # longest word never folded in any column, in cells: an IPv6 address with port fits


def print_table(
    console: "Console",
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    whole: Collection[str] = (),
    words: Collection[str] = (),
) -> None:
    """Print `rows` (one string per column; newlines allowed) under `columns`, fitted to the console.

    `whole` and `words` name columns (as in `columns`) whose cells, or whose cells' words, never break.
    """
    from rich.table import Table
    from rich.text import Text

    cells = [[_lines(cell) for cell in row] for row in rows]
    widths = column_widths(console.width, columns, cells, whole, words)
    if widths is None:
        print_records(console, title, columns, rows)
        return
    table = Table(title=title)
    for name, width in zip(columns, widths, strict=True):  # no no_wrap: it would crop a header
        table.add_column(name, width=width, overflow="fold")  # a whole column is as wide as its cells
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a '[' in data is not rich markup
    console.print(table)


def column_widths(
    space: int,
    columns: Sequence[str],
    cells: Sequence[Sequence[list[str]]],
    whole: Collection[str] = (),
    words: Collection[str] = (),
) -> list[int] | None:
    """Each column's text width for a table `space` terminal cells wide, or None if it cannot fit.

    `cells[row][column]` are a cell's lines. Every column as wide as its widest line if that fits;
    else the widths that keep rows fewest lines high with every column at least its floor (see
    `_floor`); None when the floors alone are wider than the space.
    """
    available = space - (len(columns) + 1) - PADDING * len(columns)  # borders and padding
    by_column = [[cell for row in cells for cell in row[i : i + 1]] for i in range(len(columns))]
    natural = [_widest(_lines(header), *column) for header, column in zip(columns, by_column, strict=True)]
    if sum(natural) <= available:
        return natural
    floors = [
        min(_floor(name, column, name in whole, name in words), width)
        for name, column, width in zip(columns, by_column, natural, strict=True)
    ]
    if sum(floors) > available:
        return None
    texts = [{tuple(cell) for cell in column} for column in by_column]
    height = 1
    while True:  # the fewest lines per row the space allows
        widths = [_narrowest(texts[i], floors[i], natural[i], height) for i in range(len(columns))]
        if sum(widths) <= available:
            break
        height += 1
    readable = [  # what is left goes first where a header or a word would break, narrowest first
        max(widths[i], min(natural[i], _longest_word(_lines(header), *by_column[i])))
        for i, header in enumerate(columns)
    ]
    for goal in (readable, natural):
        while sum(widths) < available and (short := [i for i, w in enumerate(widths) if w < goal[i]]):
            widths[min(short, key=lambda i: widths[i])] += 1
    return widths


def _floor(header: str, column: Sequence[list[str]], whole: bool, words: bool) -> int:
    """The narrowest a column may get, in cells: its header's longest word, and its widest line
    (`whole`), its longest word (`words`), or its longest word of up to WHOLE_TOKEN cells."""
    if whole:
        body = _widest(*column)
    elif words:
        body = _longest_word(*column)
    else:
        body = max(FOLD_FLOOR, _longest_word(*column, up_to=WHOLE_TOKEN))
    return max(_longest_word(_lines(header)), body)


def _narrowest(cells: set[tuple[str, ...]], floor: int, natural: int, height: int) -> int:
    """The narrowest width from `floor` up to `natural` at which each of `cells` (its lines) takes
    at most `height` lines."""
    for width in range(floor, natural):
        if all(sum(_height(line, width) for line in cell) <= height for cell in cells):
            return width
    return natural


def _height(text: str, width: int) -> int:
    """How many lines `text` takes at `width`: wrapped between words, a longer word folded (as rich
    does, closely enough to plan widths; rich itself renders)."""
    lines, used = 1, 0
    for word in text.split():
        size = cell_len(word)
        if used and used + 1 + size <= width:
            used += 1 + size
            continue
        if used:
            lines += 1
        lines += (size - 1) // width
        used = size - (size - 1) // width * width
    return lines


def print_records(
    console: "Console", title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """The rows as blocks of `column  value` lines, for terminals too narrow for any table; a value
    wraps between words beside its name."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(title, style="bold"))
    for row in rows:
        console.print()
        record = Table.grid(padding=(0, 2))
        record.add_column(no_wrap=True)
        record.add_column(overflow="fold")
        for name, cell in zip(columns, row, strict=True):
            record.add_row(Text(name), Text(cell))
        console.print(record)


def cell_len(text: str) -> int:
    """`text`'s width on a terminal, in cells (rich's measure: a wide character takes two)."""
    from rich.cells import cell_len as rich_cell_len

    return rich_cell_len(text)


def _lines(text: str) -> list[str]:
    return text.splitlines() or [""]


def _widest(*cells: list[str]) -> int:
    return max((cell_len(line) for cell in cells for line in cell), default=0)


def _longest_word(*cells: list[str], up_to: int | None = None) -> int:
    """The longest word's width in cells, of those no wider than `up_to` cells if given (else 0)."""
    sizes = (cell_len(word) for cell in cells for line in cell for word in line.split())
    return max((size for size in sizes if up_to is None or size <= up_to), default=0)
