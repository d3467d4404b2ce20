"""Closed-loop evaluation: runs (`run`), KPI figures (`kpis`, pure, apart from plant and controller) and the report."""
