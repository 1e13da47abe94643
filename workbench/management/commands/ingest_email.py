"""`python manage.py ingest_email FILE|-|MAILDIR`: feed raw mail to the inbound pipeline.

For a self-hosted mail server: a pipe (`| python manage.py ingest_email -`), one .eml file, or
a maildir (its new/ and cur/ mails, each taken once: the pipeline deduplicates on Message-ID,
so running it again stores nothing twice). One line per mail on stdout; the exit status is 1
when any mail was refused (its reason on stderr), 0 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from workbench.connectors.email_inbound import MAX_MAIL_BYTES, MailRefused, ingest_email


class Command(BaseCommand):
    help = (
        "Store raw RFC 5322 mail on customers' timelines and cases: a file, '-' for stdin, "
        "or a maildir directory."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", help="a .eml file, '-' for stdin, or a maildir directory")

    def handle(self, *args, source: str, **options) -> None:
        if source == "-":
            raw = sys.stdin.buffer.read(MAX_MAIL_BYTES + 1)
            mails = [("stdin", raw)]
        else:
            mails = self._from_path(Path(source))
        refused = 0
        for label, raw in mails:
            if not self._ingest(label, raw):
                refused += 1
        if refused:
            raise CommandError(f"{refused} of {len(mails)} mail(s) refused", returncode=1)

    def _from_path(self, where: Path) -> list[tuple[str, bytes]]:
        if where.is_file():
            return [(str(where), _read(where))]
        if where.is_dir():
            folders = [where / "new", where / "cur"]
            if not any(folder.is_dir() for folder in folders):
                raise CommandError(f"{where} is a directory but not a maildir (no new/ or cur/)")
            files = sorted(
                f for folder in folders if folder.is_dir() for f in folder.iterdir() if f.is_file()
            )
            return [(str(f), _read(f)) for f in files]
        raise CommandError(f"{where}: no such file or directory")

    def _ingest(self, label: str, raw: bytes) -> bool:
        try:
            result = ingest_email(raw)
        except (MailRefused, ValidationError) as exc:
            reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            self.stderr.write(f"{label}: refused: {reason}")
            return False
        if result.is_bounce:
            bounced = result.bounced
            what = f"interaction {bounced.pk} marked failed" if bounced else "no mail of ours"
            self.stdout.write(f"{label}: bounce: {what}")
            return True
        inbound = result.inbound
        state = "stored" if inbound.created else "already stored"
        case = f"case {inbound.case.pk}" if inbound.case else "no case"
        self.stdout.write(f"{label}: {state} as interaction {inbound.interaction.pk}, {case}")
        return True


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_MAIL_BYTES + 1)
