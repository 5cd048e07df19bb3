"""callrt benchmark programs. Each prints its baseline measured in the same run and the ratio."""
