"""Subcommands of ``secure-fedrec`` that span packages.

* :mod:`.study` — ``secure-fedrec study`` runs a study, then draws its plots: it uses both
  :mod:`secure_fedrec.studies` and :mod:`secure_fedrec.reports`, so it lives above them.

The flags every job command shares are in :mod:`secure_fedrec.arguments`;
:mod:`secure_fedrec.cli` assembles the commands, and nothing imports it.
"""
