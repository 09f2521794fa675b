"""The contract's files as other languages' generators read them."""

from __future__ import annotations

from types import ModuleType

import pytest

from router.v1 import admin_pb2, routing_pb2, types_pb2


@pytest.mark.parametrize("module", [admin_pb2, routing_pb2, types_pb2])
def test_every_file_names_its_package_for_go_java_and_csharp(module: ModuleType) -> None:
    """protoc-gen-go refuses a file without ``go_package``; Java and C# would otherwise put
    every message of a file in one outer class of a package named after the proto one. The
    three files are one package in each language."""
    options = module.DESCRIPTOR.GetOptions()
    assert options.go_package == "agent-router/gen/go/router/v1;routerv1"
    assert options.java_package == "io.agentrouter.router.v1"
    assert options.java_multiple_files
    assert options.csharp_namespace == "AgentRouter.Router.V1"
