"""The Prefect artifacts of one adapter's refinement: the decision's table and summary, or its failure."""

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from spectral_surgery.tasks.decision.gate import verdict_label
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.decision.report import candidate_rows, decision_markdown


def artifact_key(adapter_name: str) -> str:
    # one key per adapter: every run adds a version under it, so the Prefect UI shows the adapter's history
    return ("refine-" + "".join(c if c.isalnum() else "-" for c in adapter_name.lower()).strip("-"))[:92]


def decision_artifacts(adapter_name: str, result: dict) -> None:
    """The decision's table and Markdown artifacts, built from the decision itself (never from the dashboard)."""
    key = artifact_key(adapter_name)
    rec = DecisionRecord.from_json(result.get("statistics"))  # the result's statistics, as recorded
    label = result.get("verdict_label") or verdict_label(rec.verdict)
    review = result.get("review")
    if review and review["state"] == "pending":  # promote: review — passed, not in production yet
        label += f" (awaiting review {review['id']} until {review['expires_at']})"
    create_table_artifact(key=key, table=candidate_rows(rec),
                          description=f"{adapter_name}: {label.upper()} — {result.get('sentence', '')}")
    markdown = decision_markdown(adapter_name, rec, result.get("sentence", ""), promoted=result.get("promoted"))
    create_markdown_artifact(key=key + "-summary", markdown=markdown, description=f"Decision for {adapter_name}")


def failure_artifact(adapter_name: str, e: BaseException) -> None:
    create_markdown_artifact(key=artifact_key(adapter_name) + "-summary",
                             markdown=f"### {adapter_name}: refinement failed\n\n`{type(e).__name__}: {e}`\n",
                             description=f"Failure of {adapter_name}")
