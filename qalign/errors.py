"""The one exception type qalign raises for bad input (the CLI prints it without a traceback), and the one check of a
number's type and range."""


class QalignError(Exception):
    """A user-facing error; the message names the file, the line and the fix."""


def checked_number(value: object, name: str, kind: type, low: float | None = None, high: float | None = None, *,
                   low_open: bool = False, high_open: bool = False, optional: bool = False, why: str = "") -> object:
    """`value` as `kind` (int or float: a whole float or a numeric string converts) within [low, high] (an open end
    with low_open / high_open); None when optional. Else ValueError "`name` must be an integer >= low ..., got v."
    The one range check of a number in qalign (study files, the GRPO stage's arguments), so the messages read alike."""
    if value is None and optional:
        return None
    try:
        ok = not isinstance(value, bool) and (kind is float or float(value).is_integer())  # type: ignore[arg-type]
        number = kind(value) if ok else None
    except (TypeError, ValueError):
        number = None
    inside = number is not None and (low is None or (number > low if low_open else number >= low)) and (
        high is None or (number < high if high_open else number <= high))
    if not inside:
        what = "an integer" if kind is int else "a number"
        bounds = ("" if low is None else f" {'>' if low_open else '>='} {low}") + (
            "" if high is None else f" and {'<' if high_open else '<='} {high}")
        notes = (f" ({why})" if why else "") + (" (or null)" if optional else "")
        raise ValueError(f"`{name}` must be {what}{bounds}{notes}, got {value!r}.")
    return number
