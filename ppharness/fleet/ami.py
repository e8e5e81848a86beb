"""Each side's AMI, resolved at launch from the public SSM parameter its vendor publishes.

SkyPilot's `image_id` takes an AMI id but cannot resolve an SSM parameter, and its own default
Neuron image is an older multi-framework DLAMI; so the id is read here, in the side's region (AMIs
are regional), through boto3's `ssm:GetParameter` (free; the `aws` or `fleet` extra), and written
into the task. `fleet plan` resolves only where AWS credentials are configured, otherwise it shows
the parameter's name.
"""

from __future__ import annotations

import re
from typing import Any

from ppharness.errors import BenchError

AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")


def credentials_available() -> bool:
    """Whether boto3 is installed and finds AWS credentials here (its own provider chain)."""
    try:
        import boto3  # the aws/fleet extra: absent from a benchmark host
    except ImportError:
        return False
    try:
        return boto3.session.Session().get_credentials() is not None
    except Exception:  # a malformed ~/.aws/config: no credentials to use, plan shows the parameter
        return False


def resolve(parameter: str, region: str, client: Any | None = None) -> str:
    """The AMI id the public SSM `parameter` holds in `region`; BenchError (one line) if it cannot be read."""
    if client is None:
        try:
            import boto3  # the aws/fleet extra: absent from a benchmark host
        except ImportError:
            raise BenchError("resolving an AMI needs boto3: pip install 'ppharness[fleet]'") from None
        client = boto3.client("ssm", region_name=region)
    try:
        value = client.get_parameter(Name=parameter)["Parameter"]["Value"]
    except Exception as exc:  # botocore's ClientError, NoCredentialsError, EndpointConnectionError, ...
        raise BenchError(f"cannot read the AMI id from SSM parameter {parameter} in {region}: {exc}") from None
    if not isinstance(value, str) or not AMI_ID.match(value):
        raise BenchError(f"SSM parameter {parameter} in {region} holds {value!r}, not an AMI id")
    return value


def resolve_all(sides: list, client_for: Any | None = None) -> dict[str, str]:
    """{side name: AMI id} for every side, one GetParameter per (parameter, region).
    `client_for(region)` supplies the SSM client (tests pass botocore's Stubber-backed client)."""
    seen: dict[tuple[str, str], str] = {}
    amis = {}
    for side in sides:
        key = (side.env.image_ssm, side.region)
        if key not in seen:
            seen[key] = resolve(*key, client=client_for(side.region) if client_for else None)
        amis[side.name] = seen[key]
    return amis
