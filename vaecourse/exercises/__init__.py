"""Checkers for the exercises of the chapters.

Each chapter's exercises ask the learner to write a function; ``vc.exercises.check_<name>(function)`` runs it
against the package's reference on a few cases and says what is wrong: a shape, a sign, a missing constant,
an overflow that log space would avoid. The result prints as a short verdict.
"""

from .checking import Result, check_function

__all__ = ["Result", "check_function"]
