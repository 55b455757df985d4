"""Apache Airflow provider for 八爪鱼RPA (Octopus RPA) webhook triggers."""

from __future__ import annotations

__version__ = "0.3.0"
