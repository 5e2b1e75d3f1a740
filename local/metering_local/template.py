"""Read template.yaml: functions, API routes, tables, triggers and gateway responses.

The template is the single source of truth; the runner and the tests derive everything
they create from it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Loader.add_multi_constructor("!", _intrinsic)


@dataclass
class Route:
    method: str
    path: str
    function: str
    authorized: bool

    def pattern(self) -> re.Pattern:
        regex = re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        return re.compile(f"^{regex}$")


@dataclass
class Function:
    logical_id: str
    code_uri: Path
    handler: str
    environment: dict
    timeout: int
    events: dict = field(default_factory=dict)


@dataclass
class Template:
    root: Path
    resources: dict
    globals: dict
    parameters: dict

    @classmethod
    def load(cls, path: str | Path = "template.yaml") -> "Template":
        path = Path(path).resolve()
        doc = yaml.load(path.read_text(), Loader=_Loader)
        return cls(
            path.parent,
            doc["Resources"],
            doc.get("Globals", {}).get("Function", {}),
            doc.get("Parameters", {}),
        )

    def of_type(self, type_: str) -> dict:
        return {name: res for name, res in self.resources.items() if res["Type"] == type_}

    def tables(self) -> dict:
        return {name: res["Properties"] for name, res in self.of_type("AWS::DynamoDB::Table").items()}

    def buckets(self) -> dict:
        return {name: res.get("Properties", {}) for name, res in self.of_type("AWS::S3::Bucket").items()}

    def buses(self) -> list[str]:
        return list(self.of_type("AWS::Events::EventBus"))

    def functions(self) -> dict[str, Function]:
        out = {}
        global_env = self.globals.get("Environment", {}).get("Variables", {})
        for name, res in self.of_type("AWS::Serverless::Function").items():
            props = res["Properties"]
            env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
            out[name] = Function(
                name,
                self.root / props["CodeUri"],
                props["Handler"],
                env,
                int(props.get("Timeout", self.globals.get("Timeout", 3))),
                props.get("Events", {}),
            )
        return out

    def api(self) -> dict:
        return next(iter(self.of_type("AWS::Serverless::Api").values()))["Properties"]

    def authorizer_function(self) -> str | None:
        auth = self.api().get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        if not default:
            return None
        arn = auth["Authorizers"][default]["FunctionArn"]
        return arn["Fn::GetAtt"][0]

    def authorizer_identity(self) -> tuple[list[str], int]:
        """The default authorizer's identity headers and result TTL in seconds (`ReauthorizeEvery`;
        SAM's default is 300 when the template does not say, 0 turns the cache off)."""
        auth = self.api().get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        identity = auth.get("Authorizers", {}).get(default, {}).get("Identity", {}) if default else {}
        return list(identity.get("Headers", [])), int(identity.get("ReauthorizeEvery", 300))

    def routes(self) -> list[Route]:
        routes = []
        for fn in self.functions().values():
            for event in fn.events.values():
                if event["Type"] != "Api":
                    continue
                props = event["Properties"]
                auth = props.get("Auth", {}).get("Authorizer")
                routes.append(Route(props["Method"].upper(), props["Path"], fn.logical_id, auth != "NONE"))
        # Literal segments win over path parameters, as in API Gateway.
        routes.sort(key=lambda r: (r.path.count("{"), -len(r.path)))
        return routes

    def gateway_responses(self) -> dict:
        return self.api().get("GatewayResponses", {})

    def triggers(self, type_: str) -> list[tuple[str, dict]]:
        """(function logical id, event properties) for every event source of a type."""
        return [
            (fn.logical_id, event["Properties"])
            for fn in self.functions().values()
            for event in fn.events.values()
            if event["Type"] == type_
        ]
