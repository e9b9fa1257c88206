from datetime import timedelta

import pytest

from notifications.wording import subject_line, time_until_words


@pytest.mark.parametrize(
    ("remaining", "words"),
    [
        (timedelta(minutes=20), "within the hour"),
        (timedelta(hours=1), "in 1 hour"),
        (timedelta(hours=5, minutes=30), "in 5 hours"),
        (timedelta(hours=30), "in 30 hours"),
        (timedelta(days=4, hours=5), "in 4 days"),
        (timedelta(days=4, hours=13), "in 5 days"),
        (timedelta(days=6, hours=23, minutes=50), "in 7 days"),
    ],
)
def test_time_until_in_words(remaining, words):
    assert time_until_words(remaining) == words


def test_a_word_longer_than_the_subject_is_cut_with_an_ellipsis():
    subject = subject_line("x" * 300)
    assert subject.endswith("…") and len(subject) == 110
