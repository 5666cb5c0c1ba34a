"""Alert rules: fitness regression, a best agent that breaks a constraint, stagnation.

The detector is a small state machine fed one generation at a time. Its state is plain
JSON so it goes into each generation's snapshot, and a rollback restores it with the
population (the alerts after a rollback are the ones the original run raised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from tdevlab.engine.events import Alert, LogEntry
from tdevlab.exceptions import InvalidParameters

__all__ = ["AlertDetector", "AlertFinding", "AlertThresholds"]

Severity = Literal["warning", "error", "critical"]
_RANK = {"warning": 0, "error": 1, "critical": 2}


class AlertThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """When alerts fire.

    Attributes:
        regression_warning, regression_error, regression_critical: Relative drops of the
            average fitness below the mean of the previous ``regression_window`` generations
            that raise a "Fitness Regression Detected" alert of that severity (spec example:
            a drop of 8% is a warning). The window keeps ordinary generation-to-generation
            noise (a few percent at population 100) from raising alerts.
        stagnation_generations: Generations without a best-fitness gain above
            ``stagnation_epsilon`` before a stagnation warning (0 disables it).
        stagnation_epsilon: The smallest gain that counts as progress.
    """

    regression_warning: float = 0.08
    regression_window: int = 5
    regression_error: float = 0.15
    regression_critical: float = 0.30
    stagnation_generations: int = 30
    stagnation_epsilon: float = 1e-4

    def __post_init__(self) -> None:
        if not 0 < self.regression_warning <= self.regression_error <= self.regression_critical:
            raise InvalidParameters(
                "alert thresholds need 0 < regression_warning <= regression_error "
                f"<= regression_critical, got {self.regression_warning}, "
                f"{self.regression_error}, {self.regression_critical}"
            )
        if self.regression_window < 1:
            raise InvalidParameters(f"regression_window={self.regression_window} must be >= 1")
        if self.stagnation_generations < 0:
            raise InvalidParameters(
                f"stagnation_generations={self.stagnation_generations} must be >= 0"
            )


class AlertFinding(msgspec.Struct, frozen=True, kw_only=True):
    """An alert before the engine gives it an id."""

    kind: str
    severity: Severity
    title: str
    message: str
    details: dict[str, Any]
    recommended_action: str | None


class AlertDetector:
    """Turns per-generation statistics into alert findings.

    Args:
        thresholds: When each rule fires.
        state: A state from :meth:`state` to resume from (a snapshot's).
    """

    def __init__(self, thresholds: AlertThresholds, state: dict[str, Any] | None = None) -> None:
        self.thresholds = thresholds
        s = state or {}
        # (generation, average fitness) of the last regression_window generations.
        self.recent: list[list[float]] = [list(x) for x in s.get("recent", [])]
        # While a regression lasts: the baseline it is measured against, the generation to
        # roll back to, and the severity already reported (only an escalation re-alerts).
        self.regression: dict[str, Any] | None = s.get("regression")
        self.best_ever: float | None = s.get("best_ever")
        self.since_improvement: int = int(s.get("since_improvement", 0))
        self.stagnation_reported: bool = bool(s.get("stagnation_reported", False))
        self.best_violating: bool = bool(s.get("best_violating", False))

    def state(self) -> dict[str, Any]:
        """Return the detector state as JSON-ready values."""
        return {
            "recent": self.recent,
            "regression": self.regression,
            "best_ever": self.best_ever,
            "since_improvement": self.since_improvement,
            "stagnation_reported": self.stagnation_reported,
            "best_violating": self.best_violating,
        }

    def observe(
        self,
        *,
        generation: int,
        average_fitness: float,
        best_fitness: float,
        best_agent: str,
        best_violation: dict[str, tuple[float, float]],
        worst_new_agents: Callable[[], list[str]],
    ) -> list[AlertFinding]:
        """Feed one generation; return the alerts it raises.

        Args:
            generation: The generation number.
            average_fitness, best_fitness: Its statistics.
            best_agent: The best agent's id (and name, for messages).
            best_violation: For an infeasible best agent, each broken constraint's
                ``{"memory_kb": (value, limit)}``-style excess; empty when feasible.
            worst_new_agents: Returns the ids of the weakest new agents (the regression's
                ``affected_agents``); called only when a regression is reported.
        """
        t = self.thresholds
        findings: list[AlertFinding] = []

        if self.regression is not None:
            previous: float | None = self.regression["baseline"]
            target = int(self.regression["rollback_generation"])
        elif self.recent:
            previous = sum(a for _, a in self.recent) / len(self.recent)
            # The best recent generation: what a rollback should restore.
            target = int(max(self.recent, key=lambda r: r[1])[0])
        else:
            previous = None
        if previous is not None and previous > 0:
            # Rounded so a drop of exactly a threshold reaches it: (1.0 - 0.92) / 1.0 is
            # 0.07999999999999996 in floating point, and an 8% drop must raise the warning.
            drop = round((previous - average_fitness) / previous, 12)
            severity: Severity | None = (
                "critical"
                if drop >= t.regression_critical
                else "error"
                if drop >= t.regression_error
                else "warning"
                if drop >= t.regression_warning
                else None
            )
            reported = None if self.regression is None else self.regression["severity"]
            if severity is None:
                self.regression = None  # recovered
            elif reported is None or _RANK[severity] > _RANK[reported]:
                self.regression = {
                    "baseline": previous,
                    "rollback_generation": target,
                    "severity": severity,
                }
                findings.append(
                    AlertFinding(
                        kind="fitness_regression",
                        severity=severity,
                        title="Fitness Regression Detected",
                        message=f"Generation {generation} fitness dropped by {drop:.0%}",
                        details={
                            "previous_fitness": round(previous, 6),
                            "current_fitness": round(average_fitness, 6),
                            "drop": round(drop, 6),
                            "affected_agents": worst_new_agents(),
                            "rollback_generation": target,
                        },
                        recommended_action="rollback",
                    )
                )
        if self.regression is None:
            self.recent.append([generation, average_fitness])
            del self.recent[: -t.regression_window]

        violating = bool(best_violation)
        if violating and not self.best_violating:
            broken = ", ".join(
                f"{name} {value:.2f} > {limit:.2f}"
                for name, (value, limit) in best_violation.items()
            )
            findings.append(
                AlertFinding(
                    kind="constraint_violation",
                    severity="error",
                    title="Best Agent Violates Constraints",
                    message=(
                        f"Generation {generation}: no feasible agent; "
                        f"best {best_agent} has {broken}"
                    ),
                    details={
                        "agent_id": best_agent,
                        "constraints": {
                            k: {"value": v, "limit": lim} for k, (v, lim) in best_violation.items()
                        },
                        "affected_agents": [best_agent],
                    },
                    recommended_action="increase_population_size",
                )
            )
        self.best_violating = violating

        if self.best_ever is None or best_fitness > self.best_ever + t.stagnation_epsilon:
            self.best_ever = (
                best_fitness if self.best_ever is None else max(self.best_ever, best_fitness)
            )
            self.since_improvement = 0
            self.stagnation_reported = False
        else:
            self.since_improvement += 1
            if (
                t.stagnation_generations
                and self.since_improvement >= t.stagnation_generations
                and not self.stagnation_reported
            ):
                self.stagnation_reported = True
                findings.append(
                    AlertFinding(
                        kind="stagnation",
                        severity="warning",
                        title="Evolution Stagnating",
                        message=(
                            f"Best fitness {self.best_ever:.4f} has not improved for "
                            f"{self.since_improvement} generations"
                        ),
                        details={
                            "best_fitness": self.best_ever,
                            "generations_without_improvement": self.since_improvement,
                            "affected_agents": [best_agent],
                        },
                        recommended_action="increase_mutation_rate",
                    )
                )
        return findings


def alerts_from(findings: list[AlertFinding], first_id: int, generation: int) -> list[Alert]:
    """The API's alerts for a generation's findings, numbered from ``alert-<first_id>``."""
    return [
        Alert(
            alert_id=f"alert-{first_id + i}",
            severity=f.severity,
            kind=f.kind,
            title=f.title,
            message=f.message,
            details=f.details,
            recommended_action=f.recommended_action,
            generation=generation,
        )
        for i, f in enumerate(findings)
    ]


def rollback_events(
    generation: int, branch: int, abandoned: tuple[int, int, int], alert_id: int
) -> tuple[LogEntry, Alert]:
    """The log entry and the ``Rollback Performed`` warning of a rollback to ``generation``.

    Args:
        generation: The generation rolled back to.
        branch: The new branch the run continues on.
        abandoned: (branch, first generation, last generation) left behind.
        alert_id: The alert's number.
    """
    details = {"generation": generation, "branch": branch, "abandoned_branch": abandoned[0]}
    entry = LogEntry(
        level="warning",
        message=f"Rolled back to generation {generation}",
        details={**details, "abandoned_generations": [abandoned[1], abandoned[2]]},
        generation=generation,
    )
    alert = Alert(
        alert_id=f"alert-{alert_id}",
        severity="warning",
        kind="rollback",
        title="Rollback Performed",
        message=(
            f"Rolled back from generation {abandoned[2]} to generation {generation}; "
            f"generations {abandoned[1]}..{abandoned[2]} kept as branch {abandoned[0]}"
        ),
        details=details,
        recommended_action=None,
        generation=generation,
    )
    return entry, alert
