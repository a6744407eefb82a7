"""Seed the moto emulator with what a platform team already has before installing a delegate:
a VPC with two private subnets and one public subnet, an ECS cluster with one EC2 container
instance in that VPC, the task execution and task roles, the delegate token in Secrets Manager,
a bucket standing in for CloudFormation's response bucket, and the function's record table
(template.yaml's RecordTable, named as scripts/local.env's RECORD_TABLE).

Usage: python scripts/seed_demo.py ENDPOINT_URL
"""
import json
import sys

import boto3

endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
ec2 = boto3.client("ec2", **kw)
ecs = boto3.client("ecs", **kw)
iam = boto3.client("iam", **kw)
sm = boto3.client("secretsmanager", **kw)
s3 = boto3.client("s3", **kw)
ddb = boto3.client("dynamodb", **kw)

CLUSTER = "harness-demo"

vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
private = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24",
                             AvailabilityZone=f"us-east-1{az}")["Subnet"]["SubnetId"]
           for i, az in ((1, "a"), (2, "b"))]
public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.100.0/24",
                           AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
ec2.associate_route_table(RouteTableId=rt, SubnetId=public)

ecs.create_cluster(clusterName=CLUSTER)
ami = ec2.describe_images()["Images"][0]["ImageId"]
instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.large",
                             SubnetId=private[0])["Instances"][0]["InstanceId"]
ecs.register_container_instance(cluster=CLUSTER,
                                instanceIdentityDocument=json.dumps({"instanceId": instance}))

trust = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})
for role in ("harness-delegate-execution", "harness-delegate-task"):
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)

secret = sm.create_secret(Name="harness/delegate-token",
                          SecretString="demo-token-not-a-real-one")["ARN"]
# The Harness API key the function asks Harness for the latest supported version with
# (scripts/fake_harness.py knows it).
api_key = sm.create_secret(Name="harness/api-key",
                           SecretString="sat.demoAccountId123.demo.not-a-real-key")["ARN"]
s3.create_bucket(Bucket="cfn-responses")
ddb.create_table(TableName="harness-delegate-records", BillingMode="PAY_PER_REQUEST",
                 AttributeDefinitions=[{"AttributeName": "delegate", "AttributeType": "S"}],
                 KeySchema=[{"AttributeName": "delegate", "KeyType": "HASH"}])
ddb.update_time_to_live(TableName="harness-delegate-records",
                        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})

# Secrets Manager ends the ARN with a random suffix; the sample events name the secret without it
# (a partial ARN), which is how they stay the same from one emulator to the next.
print(json.dumps({"VpcId": vpc, "PrivateSubnets": private, "PublicSubnet": public,
                  "Cluster": CLUSTER, "Instance": instance, "TokenSecretArn": secret,
                  "TokenSecretArnInTheEvents": secret.rsplit("-", 1)[0],
                  "ApiKeySecretArn": api_key}, indent=2))
