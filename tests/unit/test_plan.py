"""Unit tests of deploy planning (`serve._control.plan`): what a deploy changes and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from serve._config import DeploymentConfig
from serve._control.deployment_state import DeploymentState
from serve._control.plan import plan_deploy
from serve.exceptions import ConflictError
from serve.messages import DeploymentId, DeploymentTarget


class _NoIO:
    def start(self, *a: Any) -> Any:
        raise AssertionError("planning starts nothing")

    def call(self, *a: Any) -> Any:
        raise AssertionError("planning calls nothing")

    def kill(self, *a: Any) -> Any:
        raise AssertionError("planning kills nothing")


def t(name: str, app: str = "default", route: str | None = None) -> DeploymentTarget:
    return DeploymentTarget(name, app, "v1", b"", DeploymentConfig(), route, False, True)


def running(*targets: DeploymentTarget, deleting: tuple[str, ...] = ()) -> dict[DeploymentId, DeploymentState]:
    out = {x.id: DeploymentState(x, _NoIO()) for x in targets}
    for dep_id in out:
        if dep_id.name in deleting:
            out[dep_id].delete()
    return out


def test_an_application_becomes_exactly_its_new_targets() -> None:
    current = running(t("A", "app", "/"), t("B", "app"), t("C", "other", "/c"))
    plan = plan_deploy(current, {"app": [t("A", "app", "/"), t("D", "app")]})
    assert [x.name for x in plan.targets] == ["A", "D"]
    assert plan.removed == (DeploymentId("app", "B"),)  # the other application's C stays


def test_a_config_deploy_deletes_applications_it_does_not_name() -> None:
    current = running(t("A", "one", "/a"), t("C", "other", "/c"))
    plan = plan_deploy(current, {"one": [t("A", "one", "/a")]}, exclusive=True)
    assert plan.removed == (DeploymentId("other", "C"),)


def test_a_1x_deploy_only_adds() -> None:
    current = running(t("A", "default", "/A"))
    plan = plan_deploy(current, {"default": [t("B", "default", "/B")]}, replace_apps=False)
    assert plan.removed == ()


def test_two_applications_on_one_route_are_refused_naming_both() -> None:
    current = running(t("A", "one", "/"))
    with pytest.raises(ConflictError, match=r"'/' is claimed by deployment 'A' of application 'one' and by 'B' "
                                            r"of application 'two'"):
        plan_deploy(current, {"two": [t("B", "two", "/")]})


def test_a_route_freed_in_the_same_deploy_can_be_taken() -> None:
    current = running(t("A", "one", "/x"), t("B", "two", "/y"))
    plan_deploy(current, {"one": [t("A", "one", "/y")], "two": [t("B", "two", "/x")]})  # a swap: fine
    plan_deploy(current, {"two": [t("B2", "two", "/x")]}, exclusive=True)  # /x's owner is deleted


def test_deployment_names_are_scoped_by_application() -> None:
    current = running(t("Model", "one", "/one"))
    plan = plan_deploy(current, {"two": [t("Model", "two", "/two")]})
    assert [x.id for x in plan.targets] == [DeploymentId("two", "Model")] and plan.removed == ()
    with pytest.raises(ConflictError, match="application 'a' has two deployments named 'M'"):
        plan_deploy({}, {"a": [t("M", "a"), t("M", "a")]})


def test_deployments_being_deleted_hold_nothing() -> None:
    current = running(t("A", "one", "/"), deleting=("A",))
    plan = plan_deploy(current, {"two": [t("A", "two", "/")]})
    assert [x.app for x in plan.targets] == ["two"] and plan.removed == ()
