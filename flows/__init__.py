"""The Sluice flow pipeline as data: tables, fields, cookies and per-feature flow builders."""
