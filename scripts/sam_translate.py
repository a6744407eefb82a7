"""Translate template.yaml the way CloudFormation's SAM transform does, offline, and fail on any
error: the check `sam validate` makes, without credentials or a network. With --stackset OUT,
also write the translated template, transform-free, for CloudFormation StackSets (which refuse
the SAM transform under service-managed permissions): the function's code comes from the
parameters CodeS3Bucket and CodeS3Key.

Usage: python scripts/sam_translate.py template.yaml [--stackset OUT.json]
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


def translate(path, code_uri, parameters=None):
    template = json.loads(json.dumps(load(path), default=str))
    template["Parameters"].update(parameters or {})
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = code_uri
            # How SAM CLI builds it; nothing CloudFormation reads.
            resource.pop("Metadata", None)
    return transform(template, {}, NoManagedPolicies())


# `sam package` uploads local code and puts its S3 address in CodeUri; stand in for that.
out = translate(sys.argv[1], "s3://packaged-by-sam/bootstrap.zip")
print(f"{sys.argv[1]}: SAM translation produced {len(out['Resources'])} resources:",
      ", ".join(sorted(out["Resources"])))

if len(sys.argv) == 4 and sys.argv[2] == "--stackset":
    code = {
        "CodeS3Bucket": {
            "Type": "String",
            "Description": "S3 bucket that holds bootstrap.zip (make package), readable from every "
                           "account and in every region the stack set deploys to.",
            "MinLength": 1,
        },
        "CodeS3Key": {
            "Type": "String",
            "Default": "harness-ecs-delegate-bootstrap/bootstrap.zip",
            "Description": "Key of bootstrap.zip in CodeS3Bucket.",
            "MinLength": 1,
        },
    }
    stackset = translate(sys.argv[1], {"Bucket": {"Ref": "CodeS3Bucket"}, "Key": {"Ref": "CodeS3Key"}}, code)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[3])), exist_ok=True)
    with open(sys.argv[3], "w") as f:
        json.dump(stackset, f, indent=2)
        f.write("\n")
    print(f"{sys.argv[3]}: transform-free template for StackSets, code from CodeS3Bucket/CodeS3Key")
