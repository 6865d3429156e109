"""smtptest.DATE_RE, the RFC 5322 date-time matcher every test that reads a
date uses (our Received: header, Postfix's and Exim's).  The dates here are
fixed, not today's: the matcher must hold on every day of the month, and a
Postfix header from the 3rd ("Thu,  3 Dec") once failed the whole e2e run
on the 1st to the 9th."""

import datetime
import re

import pytest

from smtptest import DATE_RE

DATE = re.compile(r"\A%s\Z" % DATE_RE)

MUST_MATCH = [
    # Postfix's own Received: (two spaces before a one-digit day)
    "Thu,  3 Dec 2026 06:20:54 +0000 (UTC)",
    "Sun, 13 Dec 2026 06:20:54 +0000 (UTC)",
    # smtpauthd's, Exim's, Python's formatdate
    "Thu, 03 Dec 2026 06:20:54 +0000",
    "Thu, 3 Dec 2026 06:20:54 -0500",
    # no day name, no seconds, a comment with a space
    "3 Dec 2026 06:20 +0100",
    "31 Dec 2026 23:59:59 +1400 (Line Islands)",
    # folded: a line break before white space, LF or CRLF
    "Thu,\n\t3 Dec 2026 06:20:54 +0000",
    "Thu, 3 Dec 2026\r\n 06:20:54 +0000\r\n (UTC)",
    # no white space after the comma (RFC 5322: [FWS] before the day)
    "Thu,3 Dec 2026 06:20:54 +0000",
]

MUST_NOT_MATCH = [
    "",
    "Thu 3 Dec 2026 06:20:54 +0000",            # day name without comma
    "Thu, 123 Dec 2026 06:20:54 +0000",         # three-digit day
    "Thu, 3 Dez 2026 06:20:54 +0000",           # not an English month
    "Thu, 3 Dec 26 06:20:54 +0000",             # two-digit year (obsolete)
    "Thu, 3 Dec 2026 6:20:54 +0000",            # one-digit hour
    "Thu, 3 Dec 2026 06:20:54",                 # no zone
    "Thu, 3 Dec 2026 06:20:54 UTC",             # obsolete zone name
    "Thu, 3 Dec 2026 06:20:54 +00",             # short zone
    "Thu, 3Dec 2026 06:20:54 +0000",            # no space after the day
    "Thu, 3 Dec 2026 06:20:54 +0000 (UTC",      # unclosed comment
    "Thu, 3 Dec 2026\n06:20:54 +0000",          # line break, no white space
    "Thu, 3 Dec 2026 06:20:54 +0000\n",         # a trailing line break
]


@pytest.mark.parametrize("text", MUST_MATCH)
def test_date_matches(text):
    assert DATE.match(text), repr(text)


@pytest.mark.parametrize("text", MUST_NOT_MATCH)
def test_date_does_not_match(text):
    assert not DATE.match(text), repr(text)


def every_day():
    day = datetime.datetime(2026, 1, 1, 6, 20, 54,
                            tzinfo=datetime.timezone.utc)
    while day.year == 2026:
        yield day
        day += datetime.timedelta(days=1)


def test_every_day_of_a_year_in_each_writer_style():
    """Each day of 2026, written as Postfix (space-padded day), as
    smtpauthd and Python (zero-padded) and unpadded: all match, and the
    day the matcher captured is the day written."""
    captured = re.compile(r"\A(?:\w{3},)?\s*(\d{1,2}) ")
    n = 0
    for day in every_day():
        name = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[day.weekday()]
        month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                 "Sep", "Oct", "Nov", "Dec")[day.month - 1]
        rest = "%s %d 06:20:54 +0000" % (month, day.year)
        for text in ("%s, %2d %s (UTC)" % (name, day.day, rest),
                     "%s, %02d %s" % (name, day.day, rest),
                     "%s, %d %s" % (name, day.day, rest)):
            assert DATE.match(text), repr(text)
            assert int(captured.match(text).group(1)) == day.day, text
            n += 1
    assert n == 365 * 3
