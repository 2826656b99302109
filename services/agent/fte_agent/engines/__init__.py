"""Reasoning engines. Both use the same tools (`tools.Toolbox`) and the same policy."""
