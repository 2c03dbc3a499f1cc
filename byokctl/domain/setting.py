"""An org's provider setting (SPEC §1): platform mode or a BYOK provider, and its fallback policy."""

from __future__ import annotations

PLATFORM = "platform"
FALLBACKS = ("never", "missing-key", "provider-error")
# Why a request runs on platform mode though the org chose BYOK (SPEC §3 steps 2-4).
GATE_LAPSED, NO_KEY, PROVIDER_ERROR = "gate-lapsed", "no-key", "provider-error"
