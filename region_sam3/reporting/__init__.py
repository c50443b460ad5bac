"""Human-readable evaluation reports: `report.md` (tables, curves, overlay grids) next to a
run's metrics JSON. Metrics are computed in `region_sam3.eval`; this package only renders the
public metrics dict (`test/<split>/[iter{t}/]<group>/<name>` keys)."""

from region_sam3.reporting.markdown import main_table, render_report, split_metrics
from region_sam3.reporting.run_report import write_run_report
from region_sam3.reporting.summary import summary_table, summary_tables

__all__ = ["main_table", "render_report", "split_metrics", "summary_table", "summary_tables",
           "write_run_report"]
