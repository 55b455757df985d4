"""A local webhook emulator for 八爪鱼RPA (Octopus RPA): for the demo, the tests and offline DAG work."""

from __future__ import annotations

from airflow_octorpa.emulator.config import AppSpec, EmulatorConfig, WebhookSpec, default_config
from airflow_octorpa.emulator.server import OctoRpaEmulator, expected_sign

__all__ = ["AppSpec", "EmulatorConfig", "OctoRpaEmulator", "WebhookSpec", "default_config", "expected_sign"]
