"""Translate template.yaml the way CloudFormation's SAM transform does, offline, and fail on any
error: the check `sam validate` makes, without credentials or a network.

Usage: python scripts/sam_translate.py template.yaml
"""
import json
import os
import sys

from cfnlint.decode.cfn_yaml import load
from samtranslator.translator.transform import transform

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class NoManagedPolicies:
    """The template names no AWS managed policy by name, so none has to be looked up."""

    def load(self):
        return {}


template = json.loads(json.dumps(load(sys.argv[1]), default=str))
# `sam package` uploads local code and puts its S3 address in CodeUri; stand in for that.
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://packaged-by-sam/bootstrap.zip"
out = transform(template, {}, NoManagedPolicies())
print(f"{sys.argv[1]}: SAM translation produced {len(out['Resources'])} resources:",
      ", ".join(sorted(out["Resources"])))
