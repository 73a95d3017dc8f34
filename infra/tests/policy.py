"""The infrastructure policy: one function per property of the issue, each
taking the parsed tree (hcl.Tree) and returning the list of violations
(empty when the property holds). test_policy.py runs every check on infra/;
test_mutations.py breaks properties in a copy of infra/ and shows that the
matching check reports them.

Checks find resources by what they do where it matters (the tasks' security
group is the one the ECS service uses, the alarm topic's key is the one the
topic names) rather than by resource name, and compute values with the
evaluator in tfexpr.py where a value matters (names, ports, env values).
"""

import re

import tfexpr
from hcl import blocks, get, refs
from tfexpr import UNKNOWN, Context, EvalError, evaluate

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


# --------------------------------------------------------------------------
# Evaluation contexts

ACCOUNT_ID = "123456789012"
# The longest region code (isolated partitions included): names must fit it.
LONGEST_REGION = "us-isof-south-1"
SAMPLE = {
    "environment": "production",
    "aws_region": "eu-west-1",
    "domain_name": "api.example.com",
    "image_tag": "0123456789ab",
}


def data_values(region):
    return {
        "aws_caller_identity.current.account_id": ACCOUNT_ID,
        "aws_region.current.name": region,
        "aws_region.current.id": region,
        "aws_partition.current.partition": "aws",
        "aws_partition.current.dns_suffix": "amazonaws.com",
        "aws_availability_zones.available.names": [region + s for s in "abc"],
        "aws_elb_service_account.current.arn": "arn:aws:iam::156460612806:root",
    }


def var_defaults(module):
    out = {}
    for name, v in module.variables.items():
        if "default" in v.body:
            out[name] = evaluate(v.body["default"], Context())
    return out


def context(module, region="eu-west-1", **overrides):
    vars_ = var_defaults(module)
    for k, v in SAMPLE.items():
        if k in module.variables and vars_.get(k) is None:
            vars_[k] = v
    if "aws_region" in module.variables:
        vars_["aws_region"] = region
    vars_.update(overrides)
    return Context(vars=vars_, locals=module.locals, data=data_values(region))


def ev(module, value, ctx=None, **kw):
    """Evaluate a value; EvalError becomes the string "<error: …>"."""
    ctx = ctx or context(module, **kw)
    try:
        return evaluate(value, ctx)
    except EvalError as e:
        return f"<error: {e}>"


def target(text):
    """aws_foo.bar from "${aws_foo.bar.id}" (first resource reference)."""
    if not isinstance(text, str):
        return None
    m = re.search(r"\b((?:aws|random)_[a-z0-9_]+\.[A-Za-z0-9_-]+)", text)
    return m.group(1) if m else None


def targets(text, prefix=None):
    found = set()
    for r in refs(text):
        if r.startswith("var.") or r.startswith("local.") or r.startswith("data."):
            continue
        if prefix is None or r.startswith(prefix + "."):
            found.add(r)
    return found


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def is_true(module, value):
    return ev(module, value) is True


# --------------------------------------------------------------------------
# IAM policy documents


class Statement:
    def __init__(self, body, origin):
        self.body = body
        self.origin = origin
        self.sid = body.get("sid", "")
        self.effect = body.get("effect", "Allow")
        self.actions = as_list(body.get("actions"))
        self.resources = body.get("resources")
        self.principals = [(p.get("type"), as_list(p.get("identifiers"))) for p in blocks(body, "principals")]
        self.conditions = [(c.get("test"), c.get("variable"), as_list(c.get("values"))) for c in blocks(body, "condition")]

    def allows(self, action):
        if self.effect != "Allow":
            return False
        for a in self.actions:
            if a == action or a == "*" or (a.endswith("*") and action.startswith(a[:-1])):
                return True
        return False

    def service_principals(self):
        return {i for t, ids in self.principals if t == "Service" for i in ids}

    def resources_text(self, module):
        return module.expand(self.resources if self.resources is not None else "")

    def __repr__(self):
        return f"<statement {self.sid or '?'} of {self.origin}>"


def policy_doc(module, ref):
    """The statements of the data.aws_iam_policy_document a value refers to
    (source_policy_documents included, dynamic statements too)."""
    m = re.search(r"data\.aws_iam_policy_document\.([A-Za-z0-9_-]+)", ref or "")
    if not m:
        return None
    doc = module.data("aws_iam_policy_document", m.group(1))
    if doc is None:
        return None
    out = []
    for src in as_list(doc.body.get("source_policy_documents")):
        out.extend(policy_doc(module, src) or [])
    for st in blocks(doc.body, "statement"):
        out.append(Statement(st, doc.addr))
    for dyn in blocks(doc.body, "dynamic.statement"):
        for content in blocks(dyn, "content"):
            out.append(Statement(content, doc.addr + " (dynamic)"))
    return out


def role_statements(module, role_addr):
    """Inline-policy statements of an IAM role (aws_iam_role_policy)."""
    out = []
    for rp in module.all("aws_iam_role_policy"):
        if role_addr in refs(rp.get("role", "")) or target(rp.get("role")) == role_addr:
            out.extend(policy_doc(module, rp.get("policy", "")) or [])
    return out


def role_managed_policies(module, role_addr):
    out = []
    for att in module.all("aws_iam_role_policy_attachment"):
        if target(att.get("role")) == role_addr:
            arn = att.get("policy_arn", "")
            out.append(arn)
            if "each.key" in arn and att.get("for_each"):
                out.append(module.expand(att.get("for_each")))
    return out


# --------------------------------------------------------------------------
# Security groups


class Rule:
    def __init__(self, direction, sg, body, origin):
        self.direction = direction
        self.sg = sg
        self.body = body
        self.origin = origin
        self.cidrs = [c for c in as_list(body.get("cidr_ipv4")) + as_list(body.get("cidr_ipv6"))
                      + as_list(body.get("cidr_blocks")) + as_list(body.get("ipv6_cidr_blocks")) if c]
        peer = body.get("referenced_security_group_id") or body.get("source_security_group_id")
        self.peers = {target(peer)} if peer else set()
        for sgs in as_list(body.get("security_groups")):
            self.peers.add(target(sgs))
        self.prefix_lists = as_list(body.get("prefix_list_id")) + as_list(body.get("prefix_list_ids"))

    def ports(self, module):
        lo = ev(module, self.body.get("from_port", -1))
        hi = ev(module, self.body.get("to_port", -1))
        proto = str(self.body.get("ip_protocol", self.body.get("protocol", "")))
        if proto in ("-1", "all"):
            return (0, 65535)
        return (lo, hi)

    def covers(self, module, port):
        lo, hi = self.ports(module)
        return isinstance(lo, int) and isinstance(hi, int) and lo <= port <= hi

    def __repr__(self):
        return f"<{self.direction} rule {self.origin}>"


def sg_rules(module):
    rules = []
    for r in module.all("aws_vpc_security_group_ingress_rule"):
        rules.append(Rule("ingress", target(r.get("security_group_id")), r.body, r.addr))
    for r in module.all("aws_vpc_security_group_egress_rule"):
        rules.append(Rule("egress", target(r.get("security_group_id")), r.body, r.addr))
    for r in module.all("aws_security_group_rule"):
        rules.append(Rule(r.get("type", "ingress"), target(r.get("security_group_id")), r.body, r.addr))
    for sg in module.all("aws_security_group") + module.all("aws_default_security_group"):
        for d in ("ingress", "egress"):
            for b in blocks(sg.body, d):
                rules.append(Rule(d, sg.addr, b, sg.addr + " inline " + d))
            for dyn in blocks(sg.body, "dynamic." + d):
                for b in blocks(dyn, "content"):
                    rules.append(Rule(d, sg.addr, b, sg.addr + " dynamic " + d))
    return rules


def sgs_in(value):
    return targets(value, "aws_security_group") if value is not None else set()


def tier_sgs(module):
    """The security group of each tier, found by what uses it."""
    out = {}
    lb = first(module.all("aws_lb"))
    if lb:
        out["alb"] = sgs_in(lb.get("security_groups"))
    svc = first(module.all("aws_ecs_service"))
    if svc:
        out["tasks"] = sgs_in(svc.get("network_configuration.security_groups"))
    proxy = first(module.all("aws_db_proxy"))
    if proxy:
        out["db_proxy"] = sgs_in(proxy.get("vpc_security_group_ids"))
    cluster = first(module.all("aws_rds_cluster"))
    if cluster:
        out["aurora"] = sgs_in(cluster.get("vpc_security_group_ids"))
    cache = first(module.all("aws_elasticache_serverless_cache"))
    if cache:
        out["valkey"] = sgs_in(cache.get("security_group_ids"))
    fns = module.all("aws_lambda_function")
    out["rotation"] = set().union(*[sgs_in(f.get("vpc_config.security_group_ids")) for f in fns]) if fns else set()
    eps = [e for e in module.all("aws_vpc_endpoint") if e.get("vpc_endpoint_type") == "Interface"]
    out["endpoints"] = set().union(*[sgs_in(e.get("security_group_ids")) for e in eps]) if eps else set()
    return out


def first(lst):
    return lst[0] if lst else None


def edge_violations(module, rules, sgs, src, dst, port):
    """Ingress on dst from src and egress on src to dst, covering port."""
    out = []
    s, d = sgs.get(src, set()), sgs.get(dst, set())
    if not s or not d:
        return [f"cannot find the {src} or {dst} security group"]
    ing = [r for r in rules if r.direction == "ingress" and r.sg in d and r.peers & s and r.covers(module, port)]
    if not ing:
        out.append(f"no ingress rule on the {dst} security group from {src} on port {port}")
    # Security groups without any egress rule keep AWS's allow-all only
    # outside Terraform; with rules, the edge must be explicit.
    egress_src = [r for r in rules if r.direction == "egress" and r.sg in s]
    if egress_src and not [r for r in egress_src if (r.peers & d or "0.0.0.0/0" in r.cidrs) and r.covers(module, port)]:
        out.append(f"no egress rule on the {src} security group to {dst} on port {port}")
    return out


# --------------------------------------------------------------------------
# Network


@check
def all_tf_files_parse(tree):
    out = list(tree.errors)
    known = set(tree.main.files) | (set(tree.backend.files) if tree.backend else set())
    for f in tree.all_tf_files():
        if f not in known:
            out.append(f"{f}: .tf file outside infra/ and infra/state-backend/ is not checked")
    if tree.backend is None:
        out.append("infra/state-backend/ is missing")
    return out


@check
def vpc_spans_at_least_two_azs(tree):
    m = tree.main
    out = []
    v = m.variables.get("az_count")
    if v is None:
        return ["no az_count variable"]
    for n, want in ((1, False), (2, True), (3, True)):
        ok = validations_pass(m, "az_count", n)
        if ok != want:
            out.append(f"az_count = {n} is {'accepted' if ok else 'rejected'} by its validation")
    for name in ("public", "private"):
        sub = m.resource("aws_subnet", name)
        if sub is None:
            out.append(f"no aws_subnet.{name}")
            continue
        if "var.az_count" not in m.expand(sub.get("count", "")):
            out.append(f"aws_subnet.{name} is not one per zone (count = var.az_count)")
        if "local.azs" not in sub.get("availability_zone", ""):
            out.append(f"aws_subnet.{name} does not take its zone from local.azs")
    return out


def validations_pass(module, var, value, **others):
    ctx = context(module, **{var: value}, **others)
    for vb in blocks(module.variables[var].body, "validation"):
        try:
            r = evaluate(vb["condition"], ctx)
        except EvalError:
            r = False
        if r is not True:
            return False
    return True


@check
def alb_and_nat_in_public_subnets(tree):
    m = tree.main
    out = []
    for lb in m.all("aws_lb"):
        if targets(lb.get("subnets", ""), "aws_subnet") != {"aws_subnet.public"}:
            out.append(f"{lb.addr} is not in the public subnets")
        if lb.get("internal") is not False:
            out.append(f"{lb.addr} must be internet-facing (internal = false)")
    nats = m.all("aws_nat_gateway")
    if not nats:
        out.append("no NAT gateway")
    for nat in nats:
        if targets(nat.get("subnet_id", ""), "aws_subnet") != {"aws_subnet.public"}:
            out.append(f"{nat.addr} is not in a public subnet")
    for sub in m.all("aws_subnet"):
        if sub.get("map_public_ip_on_launch") is True:
            out.append(f"{sub.addr} gives instances public addresses")
    return out


@check
def private_tiers_in_private_subnets(tree):
    m = tree.main
    out = []
    private = {"aws_subnet.private"}

    def need(block, path, what):
        if block is None:
            out.append(f"no {what}")
            return
        got = targets(block.get(path, ""), "aws_subnet")
        if got != private:
            out.append(f"{block.addr} ({what}) is not in the private subnets only: {sorted(got)}")

    svc = first(m.all("aws_ecs_service"))
    need(svc, "network_configuration.subnets", "ECS service")
    if svc is not None and svc.get("network_configuration.assign_public_ip") is not False:
        out.append(f"{svc.addr}: assign_public_ip must be false")
    need(first(m.all("aws_db_subnet_group")), "subnet_ids", "Aurora subnet group")
    need(first(m.all("aws_db_proxy")), "vpc_subnet_ids", "RDS Proxy")
    need(first(m.all("aws_elasticache_serverless_cache")), "subnet_ids", "Valkey")
    fns = m.all("aws_lambda_function")
    if not fns:
        out.append("no rotation functions")
    for fn in fns:
        need(fn, "vpc_config.subnet_ids", "rotation function")
    for ep in m.all("aws_vpc_endpoint"):
        if ep.get("vpc_endpoint_type") == "Interface":
            need(ep, "subnet_ids", "interface endpoint")
    return out


@check
def nat_gateway_per_az(tree):
    m = tree.main
    out = []
    nat = first(m.all("aws_nat_gateway"))
    if nat is None:
        return ["no NAT gateway"]
    for single, want in ((False, None), (True, 1)):
        for azs in (2, 3):
            ctx = context(m, single_nat_gateway=single, az_count=azs)
            n = ev(m, nat.get("count", 1), ctx)
            expect = want or azs
            if n != expect:
                out.append(f"{nat.addr}: count is {n} for az_count = {azs}, single_nat_gateway = {single}; expected {expect}")
    if m.variables.get("single_nat_gateway") is None:
        out.append("no single_nat_gateway variable")
    elif ev(m, m.variables["single_nat_gateway"].get("default")) is not False:
        out.append("single_nat_gateway must default to false (one NAT per zone)")
    # Each private route table uses its own zone's gateway.
    routes = [r for r in m.all("aws_route") if "aws_nat_gateway" in str(r.get("nat_gateway_id", ""))]
    if not routes:
        out.append("no private route through a NAT gateway")
    for r in routes:
        if "count.index" not in r.get("nat_gateway_id", ""):
            out.append(f"{r.addr}: every private route table must use its own zone's NAT gateway")
    return out


REQUIRED_INTERFACE_ENDPOINTS = {"ecr.api", "ecr.dkr", "logs", "secretsmanager", "sts"}


@check
def vpc_endpoints(tree):
    m = tree.main
    out = []
    ctx = context(m)
    services = {}
    for ep in m.all("aws_vpc_endpoint"):
        fe = ep.get("for_each")
        keys = [None]
        if fe is not None:
            val = ev(m, fe, ctx)
            keys = list(val.keys()) if isinstance(val, dict) else as_list(val)
        for k in keys:
            c = ctx.child(each={"key": k, "value": k}) if k is not None else ctx
            name = ev(m, ep.get("service_name"), c)
            if not isinstance(name, str):
                out.append(f"{ep.addr}: cannot evaluate service_name ({name})")
                continue
            services[name.split(".", 3)[-1]] = ep
    s3 = services.get("s3")
    if s3 is None or s3.get("vpc_endpoint_type") != "Gateway":
        out.append("no S3 gateway endpoint")
    elif targets(s3.get("route_table_ids", ""), "aws_route_table") != {"aws_route_table.private"}:
        out.append("the S3 gateway endpoint is not on the private route tables")
    sgs = tier_sgs(m)
    for svc in sorted(REQUIRED_INTERFACE_ENDPOINTS):
        ep = services.get(svc)
        if ep is None:
            out.append(f"no interface endpoint for {svc}")
            continue
        if ep.get("vpc_endpoint_type") != "Interface":
            out.append(f"{svc} endpoint is not an interface endpoint")
        if ep.get("private_dns_enabled") is not True:
            out.append(f"{svc} endpoint without private DNS")
        if not sgs_in(ep.get("security_group_ids")):
            out.append(f"{svc} endpoint has no security group")
    # The endpoints' group admits 443 from the tasks and rotation functions,
    # and nothing else.
    ep_sgs = sgs.get("endpoints", set())
    rules = sg_rules(m)
    for src in ("tasks", "rotation"):
        ok = [r for r in rules if r.direction == "ingress" and r.sg in ep_sgs and r.peers & sgs.get(src, set()) and r.covers(m, 443)]
        if not ok:
            out.append(f"the endpoints' security group does not admit 443 from {src}")
    allowed_peers = sgs.get("tasks", set()) | sgs.get("rotation", set())
    for r in rules:
        if r.direction == "ingress" and r.sg in ep_sgs:
            if r.cidrs or not r.peers <= allowed_peers or r.ports(m) != (443, 443):
                out.append(f"{r.origin}: the endpoints' security group admits more than 443 from the tasks and functions")
    return out


@check
def flow_logs_to_encrypted_log_group(tree):
    m = tree.main
    out = []
    fl = first(m.all("aws_flow_log"))
    if fl is None:
        return ["no VPC flow log"]
    if "aws_vpc." not in fl.get("vpc_id", ""):
        out.append("the flow log is not on the VPC")
    if fl.get("traffic_type") != "ALL":
        out.append("the flow log must record ALL traffic")
    if fl.get("log_destination_type", "cloud-watch-logs") != "cloud-watch-logs":
        out.append("flow logs must go to CloudWatch Logs")
    lg = m.by_addr(target(fl.get("log_destination", "")) or "")
    if lg is None or lg.type != "aws_cloudwatch_log_group":
        out.append("the flow log destination is not a log group of this stack")
    else:
        if "var." not in str(lg.get("retention_in_days", "")):
            out.append(f"{lg.addr}: retention not from a variable")
        if "aws_kms_key." not in str(lg.get("kms_key_id", "")):
            out.append(f"{lg.addr}: not encrypted with a customer managed key")
    if not fl.get("iam_role_arn"):
        out.append("the flow log has no IAM role")
    return out


@check
def security_group_tiers(tree):
    m = tree.main
    sgs = tier_sgs(m)
    rules = sg_rules(m)
    out = []
    out += edge_violations(m, rules, sgs, "alb", "tasks", 8443)
    out += edge_violations(m, rules, sgs, "tasks", "db_proxy", 5432)
    out += edge_violations(m, rules, sgs, "db_proxy", "aurora", 5432)
    out += edge_violations(m, rules, sgs, "tasks", "valkey", 6379)
    out += edge_violations(m, rules, sgs, "rotation", "aurora", 5432)
    # Each tier admits only the tiers in front of it.
    allowed = {
        "tasks": ("alb",),
        "db_proxy": ("tasks",),
        "aurora": ("db_proxy", "rotation"),
        "valkey": ("tasks", "rotation"),
    }
    for tier, peers in allowed.items():
        ok = set().union(*[sgs.get(p, set()) for p in peers])
        for r in rules:
            if r.direction == "ingress" and r.sg in sgs.get(tier, set()):
                if r.cidrs or r.prefix_lists or not r.peers or not r.peers <= ok:
                    out.append(f"{r.origin}: the {tier} security group admits something other than {', '.join(peers)}")
    return out


@check
def no_public_ingress_except_alb(tree):
    m = tree.main
    sgs = tier_sgs(m)
    out = []
    for r in sg_rules(m):
        if r.direction != "ingress":
            continue
        public = [c for c in r.cidrs if c in ("0.0.0.0/0", "::/0") or (isinstance(c, str) and "${" in c)]
        if not public:
            continue
        if r.sg not in sgs.get("alb", set()):
            out.append(f"{r.origin}: {public} ingress on {r.sg}, which is not the ALB's group")
        elif r.ports(m) not in ((443, 443), (80, 80)):
            out.append(f"{r.origin}: public ingress on ports {r.ports(m)}, only 443 and 80 are allowed")
    return out


@check
def default_security_group_denies_all(tree):
    m = tree.main
    d = first(m.all("aws_default_security_group"))
    if d is None:
        return ["the VPC's default security group is not managed (it allows traffic between its members)"]
    if blocks(d.body, "ingress") or blocks(d.body, "egress"):
        return ["the default security group has rules"]
    return []


# --------------------------------------------------------------------------
# Edge


@check
def acm_certificate_dns_validated_or_given(tree):
    m = tree.main
    out = []
    for v in ("certificate_arn", "route53_zone_id", "domain_name"):
        if v not in m.variables:
            out.append(f"no variable {v}")
    cert = first(m.all("aws_acm_certificate"))
    if cert is None:
        return out + ["no aws_acm_certificate"]
    if cert.get("validation_method") != "DNS":
        out.append("the certificate is not DNS-validated")
    if "var.certificate_arn" not in cert.get("count", ""):
        out.append("the certificate must be created only when certificate_arn is not given")
    if not [r for r in m.all("aws_route53_record") if "domain_validation_options" in m.expand(r.get("for_each", ""))]:
        out.append("no Route 53 validation records")
    val = first(m.all("aws_acm_certificate_validation"))
    if val is None or "var.route53_zone_id" not in val.get("count", ""):
        out.append("no certificate validation through var.route53_zone_id")
    https = https_listener(m)
    if https is None:
        return out + ["no HTTPS listener"]
    text = m.expand(https.get("certificate_arn", ""))
    if "var.certificate_arn" not in text or "aws_acm_certificate_validation" not in text:
        out.append("the HTTPS listener does not use the given or the validated certificate")
    return out


def https_listener(m):
    for l in m.all("aws_lb_listener"):
        if l.get("protocol") == "HTTPS":
            return l
    return None


@check
def alb_tls13_policy(tree):
    m = tree.main
    l = https_listener(m)
    if l is None:
        return ["no HTTPS listener"]
    pol = ev(m, l.get("ssl_policy"))
    ok = {"ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-TLS13-1-3-2021-06"}
    out = [] if pol in ok else [f"HTTPS listener ssl_policy is {pol!r}"]
    v = m.variables.get("alb_ssl_policy")
    if v is not None:
        for bad in ("ELBSecurityPolicy-2016-08", "ELBSecurityPolicy-TLS-1-2-2017-01"):
            if validations_pass(m, "alb_ssl_policy", bad):
                out.append(f"alb_ssl_policy accepts {bad}")
    if l.get("port") != 443:
        out.append("the HTTPS listener is not on 443")
    return out


@check
def alb_http_redirects_to_https(tree):
    m = tree.main
    for l in m.all("aws_lb_listener"):
        if l.get("protocol") == "HTTP":
            a = get(l.body, "default_action")
            if l.get("port") == 80 and get(a, "type") == "redirect" and get(a, "redirect.protocol") == "HTTPS" \
                    and str(get(a, "redirect.port")) == "443" and get(a, "redirect.status_code") == "HTTP_301":
                return []
            return [f"{l.addr}: HTTP must answer a 301 redirect to HTTPS 443"]
    return ["no HTTP listener redirecting to HTTPS"]


@check
def alb_drops_invalid_headers(tree):
    m = tree.main
    out = []
    for lb in m.all("aws_lb"):
        if lb.get("drop_invalid_header_fields") is not True:
            out.append(f"{lb.addr}: drop_invalid_header_fields must be true")
    return out or ([] if m.all("aws_lb") else ["no load balancer"])


def bucket_of(m, lb):
    return m.by_addr(target(lb.get("access_logs.bucket", "")) or "")


def bucket_settings(m, bucket_addr, type_):
    return [b for b in m.all(type_) if target(b.get("bucket", "")) == bucket_addr]


@check
def alb_access_logs_bucket_sse_s3(tree):
    m = tree.main
    lb = first(m.all("aws_lb"))
    if lb is None:
        return ["no load balancer"]
    if get(lb.body, "access_logs.enabled") is not True:
        return ["ALB access logs are not enabled"]
    b = bucket_of(m, lb)
    if b is None or b.type != "aws_s3_bucket":
        return ["ALB access logs do not go to a bucket of this stack"]
    enc = bucket_settings(m, b.addr, "aws_s3_bucket_server_side_encryption_configuration")
    if not enc:
        return [f"{b.addr} has no encryption configuration"]
    algo = get(enc[0].body, "rule.apply_server_side_encryption_by_default.sse_algorithm")
    out = []
    if algo != "AES256":
        out.append(f"{b.addr}: ALB log delivery needs SSE-S3 (AES256), not {algo!r}")
    if get(enc[0].body, "rule.apply_server_side_encryption_by_default.kms_master_key_id"):
        out.append(f"{b.addr}: a KMS key on the ALB log bucket breaks log delivery")
    return out


@check
def alb_logs_bucket_policy_elb_delivery(tree):
    m = tree.main
    lb = first(m.all("aws_lb"))
    b = bucket_of(m, lb) if lb else None
    if b is None:
        return ["no ALB log bucket"]
    pols = bucket_settings(m, b.addr, "aws_s3_bucket_policy")
    if not pols:
        return [f"{b.addr} has no bucket policy"]
    sts = policy_doc(m, pols[0].get("policy", "")) or []
    out = []
    elb = [s for s in sts if s.allows("s3:PutObject") and any(
        t == "AWS" and any("data.aws_elb_service_account" in i for i in ids) for t, ids in s.principals)]
    if not elb:
        out.append("the ALB log bucket policy does not let the regional ELB account (data.aws_elb_service_account) put objects")
    svc = [s for s in sts if s.allows("s3:PutObject") and "logdelivery.elasticloadbalancing.amazonaws.com" in s.service_principals()]
    if not svc:
        out.append("the ALB log bucket policy does not let logdelivery.elasticloadbalancing.amazonaws.com put objects")
    for s in elb + svc:
        if "AWSLogs" not in s.resources_text(m):
            out.append(f"{s}: delivery should be confined to the AWSLogs/<account>/ prefix")
    if not m.data("aws_elb_service_account"):
        out.append('no data "aws_elb_service_account"')
    lb_deps = " ".join(as_list(lb.get("depends_on")))
    if "aws_s3_bucket_policy" not in lb_deps:
        out.append("the ALB must depend on the log bucket policy (creation fails otherwise)")
    return out


def each_bucket(tree):
    for mod in tree.modules():
        for b in mod.all("aws_s3_bucket"):
            yield mod, b


@check
def s3_buckets_block_public_access(tree):
    out = []
    for m, b in each_bucket(tree):
        pab = bucket_settings(m, b.addr, "aws_s3_bucket_public_access_block")
        flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
        if not pab or any(pab[0].get(f) is not True for f in flags):
            out.append(f"{b.addr}: public access not fully blocked")
    return out


@check
def s3_buckets_have_ownership_controls(tree):
    out = []
    for m, b in each_bucket(tree):
        oc = bucket_settings(m, b.addr, "aws_s3_bucket_ownership_controls")
        if not oc or get(oc[0].body, "rule.object_ownership") != "BucketOwnerEnforced":
            out.append(f"{b.addr}: object ownership must be BucketOwnerEnforced (ACLs off)")
    return out


@check
def s3_buckets_encrypted(tree):
    out = []
    for m, b in each_bucket(tree):
        enc = bucket_settings(m, b.addr, "aws_s3_bucket_server_side_encryption_configuration")
        if not enc:
            out.append(f"{b.addr}: no default encryption")
            continue
        algo = get(enc[0].body, "rule.apply_server_side_encryption_by_default.sse_algorithm")
        key = get(enc[0].body, "rule.apply_server_side_encryption_by_default.kms_master_key_id")
        if algo == "aws:kms":
            if "aws_kms_key." not in str(key):
                out.append(f"{b.addr}: KMS encryption without a customer managed key of this stack")
        elif algo == "AES256":
            # Only where a service cannot write with a customer key.
            lb = first(m.all("aws_lb")) if m is tree.main else None
            if not (lb is not None and bucket_of(m, lb) is b):
                out.append(f"{b.addr}: SSE-S3 only; use the stack's KMS key")
        else:
            out.append(f"{b.addr}: unknown encryption {algo!r}")
    return out


@check
def s3_buckets_deny_insecure_transport(tree):
    out = []
    for m, b in each_bucket(tree):
        pols = bucket_settings(m, b.addr, "aws_s3_bucket_policy")
        sts = policy_doc(m, pols[0].get("policy", "")) if pols else []
        deny = [s for s in sts or [] if s.effect == "Deny" and any(
            c[1] == "aws:SecureTransport" and "false" in [str(x).lower() for x in c[2]] for c in s.conditions)]
        if not deny:
            out.append(f"{b.addr}: no policy statement denying requests without TLS")
    return out


@check
def s3_buckets_versioned(tree):
    out = []
    for m, b in each_bucket(tree):
        v = bucket_settings(m, b.addr, "aws_s3_bucket_versioning")
        if not v or get(v[0].body, "versioning_configuration.status") != "Enabled":
            out.append(f"{b.addr}: versioning not enabled")
    return out


@check
def global_accelerator_optional_with_client_ip_preservation(tree):
    m = tree.main
    out = []
    acc = first(m.all("aws_globalaccelerator_accelerator"))
    if acc is None:
        return ["no Global Accelerator"]
    if "var." not in acc.get("count", ""):
        out.append("the accelerator must be optional (count on a variable)")
    else:
        var = re.search(r"var\.([A-Za-z0-9_]+)", acc.get("count")).group(1)
        for val, want in ((True, 1), (False, 0)):
            n = ev(m, acc.get("count"), context(m, **{var: val}))
            if n != want:
                out.append(f"accelerator count is {n} with {var} = {val}")
    eg = first(m.all("aws_globalaccelerator_endpoint_group"))
    if eg is None:
        return out + ["no accelerator endpoint group"]
    ec = get(eg.body, "endpoint_configuration")
    if "aws_lb." not in str(get(ec, "endpoint_id")):
        out.append("the endpoint group does not point at the ALB")
    if get(ec, "client_ip_preservation_enabled") is not True:
        out.append("client_ip_preservation_enabled must be true")
    for res in m.all("aws_globalaccelerator_listener") + m.all("aws_globalaccelerator_endpoint_group"):
        if "var." not in str(res.get("count", "")):
            out.append(f"{res.addr} is not optional with the accelerator")
    return out


# --------------------------------------------------------------------------
# Service


def task_definition(m):
    return first(m.all("aws_ecs_task_definition"))


def container(m, ctx=None):
    """The Kiln container definition, evaluated (resource attributes are
    UNKNOWN)."""
    td = task_definition(m)
    if td is None:
        return None
    ctx = ctx or context(m)
    ctx.keep_json = True
    try:
        defs = evaluate(td.get("container_definitions"), ctx)
    except EvalError as e:
        return {"__error__": str(e)}
    if not isinstance(defs, list) or not defs:
        return {"__error__": "container_definitions is not a list"}
    return defs[0]


def container_env(m, ctx=None):
    c = container(m, ctx)
    if c is None or "__error__" in c:
        return None
    env = {}
    for e in c.get("environment") or []:
        env[e["name"]] = e["value"]
    return env


@check
def ecs_container_insights(tree):
    m = tree.main
    c = first(m.all("aws_ecs_cluster"))
    if c is None:
        return ["no ECS cluster"]
    for s in blocks(c.body, "setting"):
        if s.get("name") == "containerInsights" and s.get("value") in ("enabled", "enhanced"):
            return []
    return [f"{c.addr}: Container Insights not enabled"]


@check
def fargate_arm64(tree):
    m = tree.main
    td = task_definition(m)
    if td is None:
        return ["no task definition"]
    out = []
    rp = get(td.body, "runtime_platform")
    if get(rp, "cpu_architecture") != "ARM64" or get(rp, "operating_system_family") != "LINUX":
        out.append("runtime_platform must be ARM64 / LINUX")
    if td.get("requires_compatibilities") != ["FARGATE"] or td.get("network_mode") != "awsvpc":
        out.append("the task definition must be Fargate with awsvpc networking")
    svc = first(m.all("aws_ecs_service"))
    if svc is None or (svc.get("launch_type") != "FARGATE" and "FARGATE" not in str(svc.body)):
        out.append("the service does not run on Fargate")
    return out


@check
def container_runs_as_non_root(tree):
    c = container(tree.main)
    if c is None or "__error__" in c:
        return [f"cannot evaluate the container definition: {c}"]
    user = str(c.get("user", ""))
    uid = user.split(":")[0]
    if not uid or uid in ("0", "root") or not uid.isdigit() or int(uid) < 1000:
        return [f"container user is {user!r}; it must be the image's non-root user (10001:10001)"]
    if user != "10001:10001":
        return [f"container user {user!r} does not match the image's kiln user (10001:10001)"]
    return []


@check
def container_read_only_root(tree):
    c = container(tree.main)
    if c is None or "__error__" in c:
        return [f"cannot evaluate the container definition: {c}"]
    out = []
    if c.get("readonlyRootFilesystem") is not True:
        out.append("readonlyRootFilesystem must be true")
    if c.get("privileged"):
        out.append("the container must not be privileged")
    return out


# Expected environment: name -> exact value, or a predicate.
EXPECTED_ENV = {
    "KILN_ENV": "production",
    "PORT": "8443",
    "BIND_ADDRESS": "0.0.0.0",
    "SSL_SELF_SIGNED": "true",
    "TRUSTED_PROXY_HOPS": "1",
    "PUBLIC_URL": "https://api.example.com",
    "DB_PORT": "5432",
    "DB_NAME": "kiln",
    "DB_IAM_AUTH": "true",
    "REQUIRE_IAM_AUTH": "true",
    "DB_SSLMODE": ("verify-full", "require"),
    "AWS_REGION": "eu-west-1",
    "VALKEY_PORT": ("6379", UNKNOWN),
    "VALKEY_SSL": "true",
    "VALKEY_IAM_AUTH": "true",
    "ENABLE_SECRET_RELOAD": "true",
    "MIGRATE_ON_START": "false",
    "LOG_LEVEL": ("debug", "info", "warning", "warn", "error"),
}
# Present, with a value only known after apply or from a reference.
EXPECTED_REFS = {
    "DB_HOST": "aws_db_proxy.",
    "VALKEY_HOST": "aws_elasticache_serverless_cache.",
    "VALKEY_USER": "local.valkey_app_user",
    "VALKEY_CLUSTER_ID": "local.cache_name",
    "SECRET_KEY_BASE_SECRET_ARN": "aws_secretsmanager_secret.",
    "UPLOADS_BUCKET": "aws_s3_bucket.uploads",
}


@check
def container_environment(tree):
    m = tree.main
    env = container_env(m)
    if env is None:
        return ["cannot evaluate the container environment"]
    out = []
    for k, want in EXPECTED_ENV.items():
        got = env.get(k, "<missing>")
        if isinstance(want, tuple):
            if got not in want:
                out.append(f"{k} = {got!r}, expected one of {want}")
        elif got != want:
            out.append(f"{k} = {got!r}, expected {want!r}")
    if env.get("DB_SSLMODE") == "verify-full" and not env.get("DB_SSLROOTCERT"):
        out.append("DB_SSLMODE=verify-full needs DB_SSLROOTCERT")
    # DB_USERNAME: plain or from the app user's secret, not both.
    if ("DB_USERNAME" in env) == ("DB_USERNAME_SECRET_ARN" in env):
        out.append("exactly one of DB_USERNAME and DB_USERNAME_SECRET_ARN must be set")
    for k in ("DB_PASSWORD", "DB_PASSWORD_SECRET_ARN", "VALKEY_PASSWORD", "VALKEY_PASSWORD_SECRET_ARN", "DATABASE_URL", "SECRET_KEY_BASE"):
        if k in env:
            out.append(f"{k} must not be set: Kiln uses IAM tokens and *_SECRET_ARN")
    text = m.expand(task_definition(m).get("container_definitions"))
    for k, ref in EXPECTED_REFS.items():
        if k not in env:
            out.append(f"{k} is missing")
    for k, ref in EXPECTED_REFS.items():
        if ref not in text:
            out.append(f"{k} does not come from {ref}")
    # Values read from local.container_env must resolve to the right things.
    ce = m.locals.get("container_env", {})
    if isinstance(ce, dict):
        for k, ref in EXPECTED_REFS.items():
            if k in ce and ref not in m.expand(ce[k]):
                out.append(f"{k} = {ce[k]!r} does not come from {ref}")
        if "aws_db_proxy." not in m.expand(ce.get("DB_HOST", "")):
            out.append("DB_HOST must be the RDS Proxy endpoint")
    return out


@check
def container_port_8443(tree):
    m = tree.main
    c = container(m)
    if c is None or "__error__" in c:
        return ["cannot evaluate the container definition"]
    ports = [p.get("containerPort") for p in c.get("portMappings") or []]
    out = [] if ports == [8443] else [f"container ports {ports}, expected [8443]"]
    tg = first(m.all("aws_lb_target_group"))
    svc = first(m.all("aws_ecs_service"))
    if svc is not None and ev(m, svc.get("load_balancer.container_port")) != 8443:
        out.append("the service's load balancer does not target port 8443")
    if tg is not None and ev(m, tg.get("port")) != 8443:
        out.append("the target group is not on port 8443")
    return out


def secret_sources(m, text):
    """Secrets a text refers to: aws_secretsmanager_secret.* and ARN
    variables (var.*_secret_arn(s), var.extra_secret_arns)."""
    found = set()
    for r in refs(text):
        if r.startswith("aws_secretsmanager_secret."):
            found.add(r)
        elif r.startswith("var.") and re.search(r"secret_arns?$", r) and not r.startswith("var.external_"):
            found.add(r)
    return found


@check
def secrets_by_arn_with_hot_reload(tree):
    m = tree.main
    env = container_env(m)
    if env is None:
        return ["cannot evaluate the container environment"]
    out = []
    if env.get("ENABLE_SECRET_RELOAD") != "true":
        out.append("ENABLE_SECRET_RELOAD must be true")
    arns = [k for k in env if k.endswith("_SECRET_ARN")]
    if "SECRET_KEY_BASE_SECRET_ARN" not in arns:
        out.append("SECRET_KEY_BASE must come from Secrets Manager (SECRET_KEY_BASE_SECRET_ARN)")
    # With the optional OAuth ARNs set, they reach the task too.
    ctx = context(m, google_client_secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:google-AbCdEf",
                  google_client_id="client-id.apps.googleusercontent.com")
    env2 = container_env(m, ctx) or {}
    if env2.get("GOOGLE_CLIENT_SECRET_SECRET_ARN") != "arn:aws:secretsmanager:eu-west-1:123456789012:secret:google-AbCdEf":
        out.append("google_client_secret_arn does not become GOOGLE_CLIENT_SECRET_SECRET_ARN")
    c = container(m)
    for s in (c or {}).get("secrets") or []:
        if "valueFrom" not in s:
            out.append(f"task definition secret {s} without valueFrom")
    return out


@check
def task_role_reads_exactly_app_secrets(tree):
    m = tree.main
    td = task_definition(m)
    if td is None:
        return ["no task definition"]
    used = secret_sources(m, m.expand(td.get("container_definitions")))
    role = target(td.get("task_role_arn", ""))
    sts = role_statements(m, role)
    read = [s for s in sts if s.allows("secretsmanager:GetSecretValue")]
    granted = set()
    out = []
    for s in read:
        text = s.resources_text(m)
        if re.search(r'(^|[\["\s])\*', str(s.resources)) or s.resources == "*":
            out.append(f"{s}: GetSecretValue on every secret")
        granted |= secret_sources(m, text)
    if not used:
        out.append("the container reads no secret")
    if used - granted:
        out.append(f"the task role cannot read {sorted(used - granted)}")
    if granted - used:
        out.append(f"the task role reads secrets the task does not use: {sorted(granted - used)}")
    # The execution role reads only what the task definition's `secrets` name.
    ex = target(td.get("execution_role_arn", ""))
    c = container(m) or {}
    if not c.get("secrets"):
        for s in role_statements(m, ex):
            if s.allows("secretsmanager:GetSecretValue"):
                out.append(f"{s}: the execution role reads secrets the task definition does not inject")
    return out


@check
def task_role_kms_decrypt_on_cmk(tree):
    m = tree.main
    td = task_definition(m)
    role = target(td.get("task_role_arn", "")) if td else None
    sts = role_statements(m, role)
    dec = [s for s in sts if s.allows("kms:Decrypt")]
    key = None
    sec = m.resource("aws_secretsmanager_secret", "secret_key_base") or first(m.all("aws_secretsmanager_secret"))
    if sec is not None:
        key = target(sec.get("kms_key_id", ""))
    if not key:
        return ["cannot find the secrets' KMS key"]
    ok = [s for s in dec if key in targets(s.resources_text(m))]
    if not ok:
        return [f"the task role may not kms:Decrypt with {key}"]
    out = []
    for s in dec:
        if s.resources == ["*"] or s.resources == "*":
            out.append(f"{s}: kms:Decrypt on every key")
    return out


@check
def awslogs_driver_with_retention(tree):
    m = tree.main
    c = container(m)
    if c is None or "__error__" in c:
        return ["cannot evaluate the container definition"]
    lc = c.get("logConfiguration") or {}
    if lc.get("logDriver") != "awslogs":
        return ["the container does not log with awslogs"]
    text = m.expand(task_definition(m).get("container_definitions"))
    groups = [g for g in m.all("aws_cloudwatch_log_group") if g.addr + ".name" in text]
    if not groups:
        return ["awslogs-group is not a log group of this stack"]
    g = groups[0]
    if "var." not in str(g.get("retention_in_days", "")):
        return [f"{g.addr}: no retention variable"]
    return []


@check
def container_healthcheck_liveness(tree):
    c = container(tree.main)
    if c is None or "__error__" in c:
        return ["cannot evaluate the container definition"]
    hc = c.get("healthCheck") or {}
    want = ["CMD", "/usr/local/bin/kiln", "healthcheck"]
    if hc.get("command") != want:
        return [f"healthCheck command is {hc.get('command')}, expected {want}"]
    return []


@check
def target_group_https_readyz(tree):
    m = tree.main
    tg = first(m.all("aws_lb_target_group"))
    if tg is None:
        return ["no target group"]
    out = []
    if tg.get("protocol") != "HTTPS":
        out.append("target group protocol must be HTTPS")
    if ev(m, tg.get("port")) != 8443:
        out.append("target group port must be 8443")
    if tg.get("target_type") != "ip":
        out.append("target_type must be ip (awsvpc tasks)")
    hc = get(tg.body, "health_check")
    if get(hc, "path") != "/readyz" or get(hc, "protocol") != "HTTPS" or str(get(hc, "matcher")) != "200":
        out.append("health check must be HTTPS /readyz, matcher 200")
    return out


@check
def deployment_circuit_breaker_rollback(tree):
    svc = first(tree.main.all("aws_ecs_service"))
    if svc is None:
        return ["no ECS service"]
    cb = get(svc.body, "deployment_circuit_breaker")
    if get(cb, "enable") is not True or get(cb, "rollback") is not True:
        return ["deployment_circuit_breaker must enable rollback"]
    return []


@check
def stop_timeout_above_drain(tree):
    m = tree.main
    out = []
    # Default values and a spread of valid ones.
    for over in ({}, {"shutdown_timeout_seconds": 25, "container_stop_timeout": 26, "deregistration_delay": 25}):
        ctx = context(m, **over)
        c = container(m, ctx)
        env = container_env(m, context(m, **over))
        if c is None or env is None:
            return ["cannot evaluate the container definition"]
        stop = c.get("stopTimeout")
        drain = env.get("SHUTDOWN_TIMEOUT_SECONDS")
        if not isinstance(stop, int) or drain is None:
            out.append(f"stopTimeout {stop!r} / SHUTDOWN_TIMEOUT_SECONDS {drain!r} missing")
            continue
        drain = int(drain)
        if not drain < stop <= 120:
            out.append(f"need SHUTDOWN_TIMEOUT_SECONDS ({drain}) < stopTimeout ({stop}) <= 120")
        tg = first(m.all("aws_lb_target_group"))
        delay = ev(m, tg.get("deregistration_delay"), context(m, **over)) if tg else None
        if not isinstance(delay, int) or delay < drain:
            out.append(f"deregistration_delay ({delay}) must be at least SHUTDOWN_TIMEOUT_SECONDS ({drain})")
    # Terraform itself refuses inconsistent values.
    td = task_definition(m)
    pre = " ".join(str(p.get("condition")) for p in blocks(td.body, "lifecycle.precondition"))
    for a, b in (("container_stop_timeout", "shutdown_timeout_seconds"), ("deregistration_delay", "shutdown_timeout_seconds")):
        if f"var.{a}" not in pre or f"var.{b}" not in pre:
            out.append(f"no precondition relating var.{a} and var.{b}")
    if not validations_pass(m, "container_stop_timeout", 120) or validations_pass(m, "container_stop_timeout", 121):
        out.append("container_stop_timeout must be capped at 120 (Fargate)")
    return out


@check
def autoscaling_cpu_and_requests(tree):
    m = tree.main
    out = []
    tgt = first(m.all("aws_appautoscaling_target"))
    if tgt is None or tgt.get("scalable_dimension") != "ecs:service:DesiredCount":
        return ["no ECS service scaling target"]
    metrics = {}
    for p in m.all("aws_appautoscaling_policy"):
        if p.get("policy_type") == "TargetTrackingScaling":
            t = get(p.body, "target_tracking_scaling_policy_configuration.predefined_metric_specification.predefined_metric_type")
            metrics[t] = p
    for want in ("ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"):
        if want not in metrics:
            out.append(f"no target tracking on {want}")
    req = metrics.get("ALBRequestCountPerTarget")
    if req is not None:
        label = get(req.body, "target_tracking_scaling_policy_configuration.predefined_metric_specification.resource_label", "")
        if "aws_lb." not in label or "aws_lb_target_group." not in label:
            out.append("ALBRequestCountPerTarget needs resource_label <alb arn_suffix>/<target group arn_suffix>")
    svc = first(m.all("aws_ecs_service"))
    if svc is not None and "desired_count" not in str(get(svc.body, "lifecycle.ignore_changes")):
        out.append("the service must ignore desired_count (auto scaling owns it)")
    return out


@check
def uploads_bucket_private_encrypted_versioned_cors(tree):
    m = tree.main
    env_text = m.expand(m.locals.get("container_env", {}).get("UPLOADS_BUCKET", ""))
    b = m.by_addr(target(env_text) or "")
    if b is None or b.type != "aws_s3_bucket":
        return ["UPLOADS_BUCKET is not a bucket of this stack"]
    out = []
    enc = bucket_settings(m, b.addr, "aws_s3_bucket_server_side_encryption_configuration")
    if not enc or get(enc[0].body, "rule.apply_server_side_encryption_by_default.sse_algorithm") != "aws:kms":
        out.append("the uploads bucket must be KMS-encrypted")
    ver = bucket_settings(m, b.addr, "aws_s3_bucket_versioning")
    if not ver or get(ver[0].body, "versioning_configuration.status") != "Enabled":
        out.append("the uploads bucket must be versioned")
    cors = bucket_settings(m, b.addr, "aws_s3_bucket_cors_configuration")
    if not cors:
        out.append("the uploads bucket has no CORS rule")
    else:
        rule = get(cors[0].body, "cors_rule")
        methods = as_list(get(rule, "allowed_methods"))
        origins = ev(m, get(rule, "allowed_origins"))
        if "POST" not in methods:
            out.append("CORS must allow POST (browser form upload)")
        if not isinstance(origins, list) or "https://api.example.com" not in origins or "*" in origins:
            out.append(f"CORS origins {origins!r}: must be the app's origin, never *")
    if not bucket_settings(m, b.addr, "aws_s3_bucket_public_access_block"):
        out.append("the uploads bucket must block public access")
    return out


@check
def task_role_uploads_scoped(tree):
    m = tree.main
    td = task_definition(m)
    sts = role_statements(m, target(td.get("task_role_arn", ""))) if td else []
    ctx = context(m)
    out = []
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        st = [s for s in sts if s.allows(action)]
        if not st:
            out.append(f"the task role lacks {action}")
        for s in st:
            res = ev(m, s.resources, ctx)
            text = s.resources_text(m)
            if "aws_s3_bucket.uploads" not in text or not all(isinstance(r, str) or r is UNKNOWN for r in as_list(res)):
                out.append(f"{s}: {action} outside the uploads bucket")
            if "/users/*" not in text:
                out.append(f"{s}: {action} must be limited to users/*")
    lst = [s for s in sts if s.allows("s3:ListBucket")]
    if not lst:
        out.append("the task role lacks s3:ListBucket (S3 would answer missing keys 403)")
    for s in lst:
        cond = [c for c in s.conditions if c[1] == "s3:prefix" and c[0].startswith("StringLike")]
        if not cond or not all(str(v).startswith("users/") for v in cond[0][2]):
            out.append(f"{s}: s3:ListBucket must carry an s3:prefix condition on users/")
    return out


@check
def deploy_outputs(tree):
    m = tree.main
    out = []
    need = {
        "cluster name": "aws_ecs_cluster.",
        "service name": "aws_ecs_service.",
        "task definition family": "aws_ecs_task_definition.",
        "private subnets": "aws_subnet.private",
        "tasks security group": "aws_security_group.tasks",
        "ECR repository URL": "aws_ecr_repository.",
    }
    texts = {n: m.expand(o.get("value")) for n, o in m.outputs.items()}
    for what, ref in need.items():
        if not any(ref in t for t in texts.values()):
            out.append(f"no output gives the {what}")
    # The names scripts/deploy.sh and scripts/aws-common.sh read.
    for name in DEPLOY_OUTPUTS:
        if name not in m.outputs:
            out.append(f"no output {name} (the deploy scripts read it)")
    if "image_tag" not in m.variables:
        out.append("no image_tag variable (the deploy script sets it)")
    o = m.outputs.get("migration_task_overrides")
    if o is not None:
        import json as _json
        val = ev(m, o.get("value"))
        try:
            ov = _json.loads(val)["containerOverrides"][0]
        except (TypeError, ValueError, KeyError, IndexError):
            ov = {}
        if ov.get("command") != ["migrate"] or ov.get("name") != ev(m, m.locals.get("container_name")):
            out.append(f"migration_task_overrides {val!r} must run `migrate` in the Kiln container")
    td = task_definition(m)
    svc = first(m.all("aws_ecs_service"))
    ign = str(get(svc.body, "lifecycle.ignore_changes")) if svc else ""
    if td is not None and "task_definition" not in ign:
        out.append("the service must leave the revision to the deploy script (migrations run first)")
    env = container_env(m) or {}
    if env.get("MIGRATE_ON_START") != "false":
        out.append("MIGRATE_ON_START must be false (the deploy script migrates)")
    return out


DEPLOY_OUTPUTS = [
    "ecr_repository_url", "ecs_cluster_name", "ecs_service_name", "task_definition_family",
    "task_definition_arn", "container_name", "migration_task_overrides", "run_task_network_configuration",
    "private_subnet_ids", "tasks_security_group_id", "public_url", "app_log_group_name", "alarm_topic_arn",
]


@check
def alarm_names_prefixed_by_cluster(tree):
    """Alarm names start with "<cluster name>-" (the deploy script's health
    report finds the stack's alarms by that prefix)."""
    m = tree.main
    ctx = context(m)
    cl = first(m.all("aws_ecs_cluster"))
    cname = ev(m, cl.get("name"), ctx) if cl else None
    out = []
    for a in m.all("aws_cloudwatch_metric_alarm"):
        for ictx in instances(m, a, ctx) or [ctx]:
            try:
                name = evaluate(a.get("alarm_name"), ictx)
            except EvalError as e:
                name = f"<error: {e}>"
            if not isinstance(name, str) or not name.startswith(f"{cname}-"):
                out.append(f"{a.addr}: alarm name {name!r} does not start with {cname}-")
    return out


@check
def ecr_repository_hardened(tree):
    m = tree.main
    r = first(m.all("aws_ecr_repository"))
    if r is None:
        return ["no ECR repository"]
    out = []
    if get(r.body, "image_scanning_configuration.scan_on_push") is not True:
        out.append("scan_on_push must be true")
    if r.get("image_tag_mutability") != "IMMUTABLE":
        out.append("image tags must be IMMUTABLE")
    if get(r.body, "encryption_configuration.encryption_type") != "KMS" or "aws_kms_key." not in str(get(r.body, "encryption_configuration.kms_key")):
        out.append("the repository must be encrypted with the stack's KMS key")
    if not [p for p in m.all("aws_ecr_lifecycle_policy") if target(p.get("repository", "")) == r.addr]:
        out.append("the repository has no lifecycle policy")
    return out


# --------------------------------------------------------------------------
# Aurora and RDS Proxy


def cluster(m):
    return first(m.all("aws_rds_cluster"))


@check
def aurora_serverless_v2(tree):
    m = tree.main
    c = cluster(m)
    if c is None:
        return ["no Aurora cluster"]
    out = []
    if c.get("engine") != "aurora-postgresql":
        out.append("engine must be aurora-postgresql")
    if c.get("engine_mode", "provisioned") != "provisioned":
        out.append("Serverless v2 uses engine_mode provisioned")
    sc = get(c.body, "serverlessv2_scaling_configuration")
    if not sc or "var." not in str(get(sc, "min_capacity")) or "var." not in str(get(sc, "max_capacity")):
        out.append("serverlessv2_scaling_configuration must take min/max ACU from variables")
    for v, bad, good in (("aurora_min_acu", 0.25, 0.5), ("aurora_max_acu", 257, 16)):
        if v not in m.variables:
            out.append(f"no variable {v}")
        elif validations_pass(m, v, bad) or not validations_pass(m, v, good):
            out.append(f"{v}: validation must reject {bad} and accept {good}")
    insts = m.all("aws_rds_cluster_instance")
    if len(insts) < 2:
        out.append("need a writer and a reader instance")
    for i in insts:
        if i.get("instance_class") != "db.serverless":
            out.append(f"{i.addr}: instance_class must be db.serverless")
    return out


@check
def aurora_instances_in_different_azs(tree):
    m = tree.main
    insts = m.all("aws_rds_cluster_instance")
    ctx = context(m)
    azs = []
    for i in insts:
        if "local.azs" not in str(i.get("availability_zone")):
            return [f"{i.addr}: availability_zone must come from local.azs"]
        azs.append(ev(m, i.get("availability_zone"), ctx))
    if len(set(map(str, azs))) < 2 or len(azs) != len(set(map(str, azs))):
        return [f"instances are in zones {azs}; the writer and reader need different zones"]
    return []


@check
def aurora_encrypted_with_cmk(tree):
    m = tree.main
    c = cluster(m)
    if c is None:
        return ["no Aurora cluster"]
    out = []
    if c.get("storage_encrypted") is not True:
        out.append("storage_encrypted must be true")
    if "aws_kms_key." not in str(c.get("kms_key_id")):
        out.append("kms_key_id must be the stack's customer managed key")
    if c.get("manage_master_user_password") is True and "aws_kms_key." not in str(c.get("master_user_secret_kms_key_id")):
        out.append("the RDS-managed master secret must use the stack's key")
    if c.get("master_password"):
        out.append("master_password in Terraform: the password would sit in state")
    for i in m.all("aws_rds_cluster_instance"):
        if i.get("performance_insights_enabled") is True and "aws_kms_key." not in str(i.get("performance_insights_kms_key_id")):
            out.append(f"{i.addr}: Performance Insights without the stack's key")
    return out


@check
def aurora_protected(tree):
    m = tree.main
    c = cluster(m)
    if c is None:
        return ["no Aurora cluster"]
    out = []
    if ev(m, c.get("deletion_protection")) is not True:
        out.append("deletion_protection must be on (by default)")
    br = ev(m, c.get("backup_retention_period", 1))
    if not isinstance(br, int) or br < 7:
        out.append(f"backup_retention_period {br!r}: keep at least 7 days")
    if c.get("skip_final_snapshot") is not False:
        out.append("skip_final_snapshot must be false")
    return out


@check
def aurora_iam_auth_and_force_ssl(tree):
    m = tree.main
    c = cluster(m)
    if c is None:
        return ["no Aurora cluster"]
    out = []
    if c.get("iam_database_authentication_enabled") is not True:
        out.append("iam_database_authentication_enabled must be true")
    if c.get("enabled_cloudwatch_logs_exports") != ["postgresql"]:
        out.append('enabled_cloudwatch_logs_exports must be ["postgresql"]')
    pg = m.by_addr(target(c.get("db_cluster_parameter_group_name", "")) or "")
    if pg is None:
        out.append("the cluster has no parameter group of this stack")
    else:
        params = {p.get("name"): str(p.get("value")) for p in blocks(pg.body, "parameter")}
        if params.get("rds.force_ssl") != "1":
            out.append("rds.force_ssl must be 1")
        fam = ev(m, pg.get("family"))
        if not (isinstance(fam, str) and fam.startswith("aurora-postgresql")):
            out.append(f"parameter group family {fam!r}")
    return out


@check
def aurora_private(tree):
    m = tree.main
    out = []
    c = cluster(m)
    if c is None:
        return ["no Aurora cluster"]
    sg = m.by_addr(target(c.get("db_subnet_group_name", "")) or "")
    if sg is None or targets(sg.get("subnet_ids", ""), "aws_subnet") != {"aws_subnet.private"}:
        out.append("the cluster's subnet group must hold only private subnets")
    for i in m.all("aws_rds_cluster_instance"):
        if i.get("publicly_accessible") is not False:
            out.append(f"{i.addr}: publicly_accessible must be false")
    return out


@check
def rds_proxy_tls_and_iam(tree):
    m = tree.main
    p = first(m.all("aws_db_proxy"))
    if p is None:
        return ["no RDS Proxy"]
    out = []
    if p.get("require_tls") is not True:
        out.append("require_tls must be true")
    auth = get(p.body, "auth")
    if get(auth, "iam_auth") != "REQUIRED":
        out.append('auth.iam_auth must be "REQUIRED"')
    if "aws_secretsmanager_secret." not in str(get(auth, "secret_arn")):
        out.append("the proxy must log in with the app user's secret")
    if p.get("engine_family") != "POSTGRESQL":
        out.append("engine_family must be POSTGRESQL")
    if not [t for t in m.all("aws_db_proxy_target") if "aws_rds_cluster." in str(t.get("db_cluster_identifier"))]:
        out.append("the proxy has no Aurora target")
    return out


@check
def rds_connect_uses_proxy_resource_id(tree):
    """rds-db:connect must name the proxy by its resource id (prx-…, element
    6 of its ARN split on ':'), never by its name."""
    m = tree.main
    td = task_definition(m)
    sts = role_statements(m, target(td.get("task_role_arn", ""))) if td else []
    conn = [s for s in sts if s.allows("rds-db:connect")]
    if not conn:
        return ["the task role has no rds-db:connect"]
    out = []
    # Evaluate with a proxy ARN and name standing in for the real ones.
    proxy = first(m.all("aws_db_proxy"))
    if proxy is None:
        return ["no RDS Proxy"]
    arn = "arn:aws:rds:eu-west-1:123456789012:db-proxy:prx-0123456789abcdef0"
    stand_in = {proxy.addr: {"arn": arn, "name": "proxy-NAME", "id": "proxy-NAME", "endpoint": "proxy.example"}}
    users = ev(m, m.locals.get("db_users"))
    for s in conn:
        res = evaluate_with_resources(m, s.resources, stand_in)
        if not isinstance(res, list) or not res:
            out.append(f"{s}: cannot evaluate the rds-db:connect resources ({res})")
            continue
        for r in res:
            mm = re.fullmatch(r"arn:aws:rds-db:eu-west-1:123456789012:dbuser:([^/]+)/(.+)", str(r))
            if not mm:
                out.append(f"{s}: {r!r} is not arn:aws:rds-db:<region>:<account>:dbuser:<proxy id>/<user>")
                continue
            if mm.group(1) != "prx-0123456789abcdef0":
                out.append(f"{s}: rds-db:connect names {mm.group(1)!r}; it must be the proxy's resource id (prx-…), not its name")
        got_users = {str(r).rsplit("/", 1)[-1] for r in res}
        if isinstance(users, list) and not set(users) <= got_users:
            out.append(f"{s}: rds-db:connect must cover every app user {users}, got {sorted(got_users)}")
    return out


def evaluate_with_resources(m, value, resources):
    """Evaluate a value where the given resources have known attributes."""
    ctx = context(m)
    text = value if isinstance(value, str) else None

    def subst(v):
        if isinstance(v, str):
            for addr, attrs in resources.items():
                for attr, val in attrs.items():
                    v = v.replace(f"{addr}.{attr}", '"' + val + '"')
            return v
        if isinstance(v, list):
            return [subst(x) for x in v]
        if isinstance(v, dict):
            return {k: subst(x) for k, x in v.items()}
        return v

    locals_ = {k: subst(v) for k, v in m.locals.items()}
    ctx = Context(vars=ctx.vars, locals=locals_, data=ctx.data)
    try:
        return evaluate(subst(value if text is None else text), ctx)
    except EvalError as e:
        return f"<error: {e}>"


# --------------------------------------------------------------------------
# Valkey


def cache(m):
    return first(m.all("aws_elasticache_serverless_cache"))


@check
def valkey_serverless_encrypted_private(tree):
    m = tree.main
    c = cache(m)
    if c is None:
        return ["no ElastiCache serverless cache"]
    out = []
    if c.get("engine") != "valkey":
        out.append("engine must be valkey")
    if "aws_kms_key." not in str(c.get("kms_key_id")):
        out.append("the cache must be encrypted with the stack's key")
    if targets(c.get("subnet_ids", ""), "aws_subnet") != {"aws_subnet.private"}:
        out.append("the cache must be in the private subnets")
    if not sgs_in(c.get("security_group_ids")):
        out.append("the cache has no security group")
    if "aws_elasticache_user_group." not in str(c.get("user_group_id")):
        out.append("the cache must use the stack's user group (RBAC)")
    return out


def user_group_users(m):
    c = cache(m)
    ug = m.by_addr(target(c.get("user_group_id", "")) or "") if c else None
    if ug is None:
        return None, []
    users = [m.by_addr(t) for t in sorted(targets(ug.get("user_ids", ""), "aws_elasticache_user"))]
    return ug, [u for u in users if u is not None]


@check
def valkey_default_user_disabled(tree):
    m = tree.main
    ug, users = user_group_users(m)
    if ug is None:
        return ["no user group on the cache"]
    defaults = [u for u in users if ev(m, u.get("user_name")) == "default"]
    if not defaults:
        return ["the user group has no user named default (ElastiCache requires one; it must be disabled)"]
    out = []
    for u in defaults:
        acc = str(ev(m, u.get("access_string")))
        tokens = acc.split()
        if "off" not in tokens or "on" in tokens:
            out.append(f"{u.addr}: the default user must be off (access_string {acc!r})")
        if "-@all" not in tokens:
            out.append(f"{u.addr}: the default user must have no commands (-@all)")
        mode = get(u.body, "authentication_mode.type")
        if mode == "no-password-required" or u.get("no_password_required") is True:
            out.append(f"{u.addr}: the default user must not be passwordless")
    return out


def app_valkey_user(m):
    env_text = m.expand(m.locals.get("container_env", {}).get("VALKEY_USER", ""))
    want = ev(m, m.locals.get("container_env", {}).get("VALKEY_USER"))
    for u in m.all("aws_elasticache_user"):
        if ev(m, u.get("user_name")) == want:
            return u
    return None


@check
def valkey_app_user_iam(tree):
    m = tree.main
    u = app_valkey_user(m)
    if u is None:
        return ["VALKEY_USER is not an ElastiCache user of this stack"]
    out = []
    if get(u.body, "authentication_mode.type") != "iam":
        out.append(f"{u.addr}: authentication_mode must be iam")
    uid, name = ev(m, u.get("user_id")), ev(m, u.get("user_name"))
    if uid != name:
        out.append(f"{u.addr}: IAM authentication requires user_id == user_name ({uid!r} != {name!r})")
    if isinstance(name, str) and name != name.lower():
        out.append(f"{u.addr}: IAM user names must be lower case")
    ug, users = user_group_users(m)
    if u not in users:
        out.append(f"{u.addr} is not in the cache's user group")
    acc = str(ev(m, u.get("access_string")))
    if not acc.split()[:1] == ["on"]:
        out.append(f"{u.addr}: app user must be on")
    env = container_env(m) or {}
    if env.get("VALKEY_CLUSTER_ID") != ev(m, cache(m).get("name")):
        out.append("VALKEY_CLUSTER_ID must be the serverless cache's name")
    return out


@check
def elasticache_connect_covers_cache_and_user(tree):
    """elasticache:Connect must name both the cache and the IAM user."""
    m = tree.main
    td = task_definition(m)
    sts = role_statements(m, target(td.get("task_role_arn", ""))) if td else []
    conn = [s for s in sts if s.allows("elasticache:Connect")]
    if not conn:
        return ["the task role has no elasticache:Connect"]
    c, u = cache(m), app_valkey_user(m)
    text = "\n".join(s.resources_text(m) for s in conn)
    got = targets(text)
    out = []
    if c is None or c.addr not in got:
        out.append("elasticache:Connect does not cover the serverless cache")
    if u is None or u.addr not in got:
        out.append("elasticache:Connect does not cover the app's ElastiCache user (every IAM login is denied)")
    return out


# --------------------------------------------------------------------------
# Secrets and rotation


@check
def secrets_encrypted_with_cmk(tree):
    m = tree.main
    out = []
    secrets = m.all("aws_secretsmanager_secret")
    if not secrets:
        return ["no secrets"]
    for s in secrets:
        if "aws_kms_key." not in str(s.get("kms_key_id")):
            out.append(f"{s.addr}: not encrypted with the stack's key")
    return out


@check
def no_secret_values_in_state(tree):
    """Generated secret values go through ephemeral resources and write-only
    arguments; the one exception is an ElastiCache user's first password,
    which has no write-only argument (and is rotated at once)."""
    m = tree.main
    out = []
    for c in m.all("aws_rds_cluster"):
        if c.get("master_password"):
            out.append(f"{c.addr}: master_password is stored in state; use master_password_wo")
        wo = str(c.get("master_password_wo", ""))
        if c.get("manage_master_user_password") is not True and "ephemeral." not in wo:
            out.append(f"{c.addr}: the master password must come from an ephemeral value (master_password_wo)")
    valkey_pw = set()
    for u in m.all("aws_elasticache_user"):
        valkey_pw |= {r for r in re.findall(r"random_password\.[A-Za-z0-9_]+", str(u.body))}
    for v in m.all("aws_secretsmanager_secret_version"):
        plain = m.expand(v.get("secret_string", ""))
        gen = set(re.findall(r"random_password\.[A-Za-z0-9_]+", plain))
        for g in sorted(gen - valkey_pw):
            out.append(f"{v.addr}: secret_string holds {g} (stored in state); use secret_string_wo with an ephemeral value")
        if re.search(r'password\s*=\s*"[^"$]+"', plain):
            out.append(f"{v.addr}: literal password")
        wo = str(v.get("secret_string_wo", ""))
        if wo and "ephemeral." not in wo:
            out.append(f"{v.addr}: secret_string_wo from something other than an ephemeral value")
        if wo and v.get("secret_string_wo_version") is None:
            out.append(f"{v.addr}: secret_string_wo needs secret_string_wo_version")
    for r in m.resources:
        if r.type == "random_password" and r.addr not in valkey_pw:
            out.append(f"{r.addr}: a random_password resource lives in state; use ephemeral \"random_password\"")
    return out


@check
def initial_versions_survive_rotation(tree):
    """The Terraform-made first version of a rotated secret carries a label
    of its own and Terraform ignores label moves: otherwise the version is
    eventually deleted, dropped from state, and re-created over the rotated
    value."""
    m = tree.main
    rotated = set()
    for secrets, _ in rotation_pairs(m):
        rotated |= secrets
    out = []
    ctx = context(m)
    for v in m.all("aws_secretsmanager_secret_version"):
        if target(v.get("secret_id", "")) not in rotated:
            continue
        stages = ev(m, v.get("version_stages"), ctx)
        custom = [x for x in as_list(stages) if isinstance(x, str) and not x.startswith("AWS")]
        if not custom:
            out.append(f"{v.addr}: no label of its own in version_stages (rotations would orphan it)")
        if "version_stages" not in str(get(v.body, "lifecycle.ignore_changes")):
            out.append(f"{v.addr}: must ignore changes to version_stages (the rotation moves them)")
    return out


def lambda_clone_suffix(tree):
    """The suffix the DB rotation function appends to make the other user
    (infra/lambdas/src/kind_db.c), or None when that source is absent."""
    import os
    path = os.path.join(tree.repo, "infra", "lambdas", "src", "kind_db.c")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        m = re.search(r'#define\s+CLONE_SUFFIX\s+"([^"]+)"', f.read())
    return m.group(1) if m else None


@check
def db_app_secret_rds_format(tree):
    """The app user's secret: RDS format, alternating between two users
    that are the ones the rotation function creates."""
    m = tree.main
    proxy = first(m.all("aws_db_proxy"))
    sec = m.by_addr(target(str(get(proxy.body, "auth.secret_arn"))) or "") if proxy else None
    if sec is None:
        return ["the proxy's secret is not a secret of this stack"]
    versions = [v for v in m.all("aws_secretsmanager_secret_version") if target(v.get("secret_id", "")) == sec.addr]
    out = []
    if not versions:
        return [f"{sec.addr} has no first version in the RDS format"]
    v = versions[0]
    ctx = context(m)
    ctx.keep_json = True
    raw = v.get("secret_string_wo", v.get("secret_string"))
    val = ev(m, raw, ctx)
    if not isinstance(val, dict):
        return [f"{v.addr}: the secret is not a JSON object ({val})"]
    for k in ("username", "password", "engine", "host", "port", "dbname"):
        if k not in val:
            out.append(f"{v.addr}: no {k!r}")
    if val.get("engine") != "postgres":
        out.append("engine must be postgres")
    if "aws_rds_cluster." not in m.expand(str(raw)):
        out.append("host must be the Aurora cluster (the rotation function logs in there)")
    users = ev(m, m.locals.get("db_users"))
    if not (isinstance(users, list) and len(users) == 2 and users[0] != users[1]):
        out.append(f"local.db_users must name two users, got {users}")
    else:
        if val.get("username") != users[0]:
            out.append("the secret's first username must be local.db_users[0]")
        suffix = lambda_clone_suffix(tree)
        if suffix is not None and users[1] != users[0] + suffix:
            out.append(f"local.db_users {users}: the rotation function alternates <user> and <user>{suffix}")
        if suffix is None and not (users[0].endswith("_a") and users[1].endswith("_b")):
            out.append(f"local.db_users {users}: expected <name>_a and <name>_b")
    if "secret_string" in v.body and "secret_string" not in str(get(v.body, "lifecycle.ignore_changes")):
        out.append("a plain first version must ignore later changes (rotation owns the value)")
    return out


@check
def db_master_secret_rds_format(tree):
    """The master secret the DB rotation function logs in with: RDS format,
    the same cluster as the app secret, the cluster's master user."""
    m = tree.main
    master = master_secret(m)
    if master is None:
        return ["the DB rotation function has no master secret (MASTER_SECRET_ARN)"]
    versions = [v for v in m.all("aws_secretsmanager_secret_version") if target(v.get("secret_id", "")) == master]
    if not versions:
        return [f"{master} has no version made by this stack"]
    v = versions[0]
    ctx = context(m)
    ctx.keep_json = True
    raw = v.get("secret_string_wo", v.get("secret_string"))
    val = ev(m, raw, ctx)
    if not isinstance(val, dict):
        return [f"{v.addr}: not a JSON object ({val})"]
    out = [f"{v.addr}: no {k!r}" for k in ("engine", "host", "port", "username", "password") if k not in val]
    text = m.expand(str(raw))
    if "aws_rds_cluster." not in text:
        out.append(f"{v.addr}: host must be the Aurora cluster (the function checks both secrets name one host)")
    c = cluster(m)
    if c is not None and val.get("username") != ev(m, c.get("master_username"), ctx):
        out.append(f"{v.addr}: username is not the cluster's master user")
    if c is not None and str(c.get("master_password_wo_version")) != str(v.get("secret_string_wo_version")):
        out.append("the cluster's and the secret's password versions must move together")
    return out


@check
def data_stores_encrypted_and_private(tree):
    """Every data store at once: Aurora, Valkey, S3, secrets, the alarm
    topic, log groups, the state lock table."""
    out = []
    for name in ("aurora_encrypted_with_cmk", "aurora_private", "valkey_serverless_encrypted_private",
                 "s3_buckets_encrypted", "s3_buckets_block_public_access", "s3_buckets_deny_insecure_transport",
                 "secrets_encrypted_with_cmk", "sns_topic_encrypted_and_cloudwatch_can_use_key",
                 "log_groups_retention_and_kms", "ecr_repository_hardened", "backup_vault_cmk"):
        out += [f"{name}: {v}" for v in CHECKS[name](tree)]
    if tree.backend is not None:
        for t in tree.backend.all("aws_dynamodb_table"):
            if get(t.body, "server_side_encryption.enabled") is not True:
                out.append(f"{t.addr}: not encrypted")
    return out


@check
def oauth_secrets_by_arn_only(tree):
    m = tree.main
    out = []
    for name, v in m.variables.items():
        lname = name.lower()
        if re.search(r"(secret|password|private_key|token)", lname) and not re.search(r"(_arns?|_days|_seconds|_version|reload)$", lname) \
                and not lname.startswith("enable_"):
            out.append(f"variable {name} looks like a secret value: pass secrets by ARN")
        if v.body.get("sensitive") is True:
            out.append(f"variable {name} is a sensitive value: pass secrets by ARN")
    for want in ("google_client_secret_arn", "apple_private_key_secret_arn"):
        if want not in m.variables:
            out.append(f"no variable {want}")
    return out


def rotation_pairs(m):
    """(secret addr, rotation block) for every rotation schedule."""
    ctx = context(m)
    out = []
    for r in m.all("aws_secretsmanager_secret_rotation"):
        fe = r.get("for_each")
        if fe is not None:
            coll = ev(m, fe, ctx)
            text = m.expand(fe)
            secrets = targets(text, "aws_secretsmanager_secret")
            out.append((secrets, r))
        else:
            out.append((targets(r.get("secret_id", ""), "aws_secretsmanager_secret"), r))
    return out


@check
def rotation_schedules_wired(tree):
    m = tree.main
    out = []
    rotated = set()
    for secrets, r in rotation_pairs(m):
        rotated |= secrets
        if "aws_lambda_function." not in str(r.get("rotation_lambda_arn")):
            out.append(f"{r.addr}: not wired to a rotation function of this stack")
        days = get(r.body, "rotation_rules.automatically_after_days") or get(r.body, "rotation_rules.schedule_expression")
        if not days:
            out.append(f"{r.addr}: no schedule")
    master = master_secret(m)
    for s in m.all("aws_secretsmanager_secret"):
        if s.addr not in rotated and s.addr != master:
            out.append(f"{s.addr} is never rotated")
    if master is None:
        out.append("the DB rotation function has no master secret (MASTER_SECRET_ARN)")
    if "secret_key_base_rotation_days" in m.variables and validations_pass(m, "secret_key_base_rotation_days", 7):
        out.append("SECRET_KEY_BASE rotations 7 days apart or closer would log users out (sessions last 7 days)")
    return out


def rotation_envs(m):
    """{function kind: its environment, evaluated (ARNs UNKNOWN)} and the
    raw text of each."""
    out = {}
    ctx = context(m)
    for fn in m.all("aws_lambda_function"):
        env = get(fn.body, "environment.variables")
        for ictx in instances(m, fn, ctx) or []:
            try:
                val = evaluate(env, ictx)
            except EvalError as e:
                val = {"__error__": str(e)}
            key = ictx.each["key"] if ictx.each else fn.name
            out[key] = (val, fn)
    return out


def rotation_env_text(m, kind):
    """The environment of one kind, as text (for references)."""
    re_env = m.locals.get("rotation_env", {})
    if isinstance(re_env, dict) and kind in re_env:
        return m.expand(re_env[kind])
    return ""


def master_secret(m):
    return target(rotation_env_text(m, "db-user").split("MASTER_SECRET_ARN", 1)[-1]) \
        if "MASTER_SECRET_ARN" in rotation_env_text(m, "db-user") else None


@check
def rotation_lambdas_configured(tree):
    m = tree.main
    fns = m.all("aws_lambda_function")
    if not fns:
        return ["no rotation functions"]
    out = []
    ctx = context(m)
    for fn in fns:
        if fn.get("runtime") != "provided.al2023":
            out.append(f"{fn.addr}: runtime must be provided.al2023")
        if fn.get("architectures") != ["arm64"]:
            out.append(f"{fn.addr}: architectures must be [\"arm64\"]")
        if fn.get("handler") != "bootstrap":
            out.append(f"{fn.addr}: handler must be bootstrap")
        fname = str(fn.get("filename", ""))
        if "var." not in fname or not fname.rstrip("}").endswith('.zip"') and ".zip" not in fname:
            out.append(f"{fn.addr}: filename must come from a variable and name a zip")
        default_dir = ev(m, m.variables.get("lambda_artifacts_dir").body.get("default")) if "lambda_artifacts_dir" in m.variables else None
        if default_dir is not None and not str(default_dir).rstrip("/").endswith("build/lambdas/arm64"):
            out.append(f"lambda_artifacts_dir defaults to {default_dir!r}, not the build/lambdas/arm64 "
                       "of `LAMBDA_ARCH=arm64 make lambdas`")
        if "rotate-" not in fname:
            out.append(f"{fn.addr}: filename must name the rotate-<kind>.zip that `make lambdas` builds")
        lc = get(fn.body, "logging_config.log_group")
        lg = m.by_addr(target(str(lc)) or "") if lc else None
        if lg is None:
            out.append(f"{fn.addr}: its log group is not one of this stack (Lambda would create one without retention)")
        if not sgs_in(get(fn.body, "vpc_config.security_group_ids")):
            out.append(f"{fn.addr}: no security group")
        perms = [p for p in m.all("aws_lambda_permission") if fn.addr in str(p.get("function_name"))]
        if not [p for p in perms if p.get("principal") == "secretsmanager.amazonaws.com" and p.get("source_arn")]:
            out.append(f"{fn.addr}: no lambda permission for secretsmanager.amazonaws.com (scoped by source_arn)")
    env_text = m.expand(m.locals.get("container_env", {}).get("ENABLE_SECRET_RELOAD", ""))
    if "var.enable_secret_reload" not in env_text:
        out.append("the task's ENABLE_SECRET_RELOAD must follow var.enable_secret_reload")
    # Environment (infra/lambdas: kiln-rotate --help).
    envs = rotation_envs(m)
    for kind in ("secret-key-base", "db-user", "valkey-user"):
        if kind not in envs:
            out.append(f"no rotation function for {kind}")
    for kind, (env, fn) in envs.items():
        if not isinstance(env, dict) or "__error__" in env:
            out.append(f"{fn.addr}[{kind}]: cannot evaluate its environment ({env})")
            continue
        for k in ("ECS_CLUSTER", "ECS_SERVICE", "HOT_RELOAD"):
            if k not in env:
                out.append(f"{fn.addr}[{kind}]: no {k} in its environment")
        if env.get("ECS_CLUSTER") != ev(m, first(m.all("aws_ecs_cluster")).get("name")) or \
                env.get("ECS_SERVICE") != ev(m, first(m.all("aws_ecs_service")).get("name")):
            out.append(f"{fn.addr}[{kind}]: ECS_CLUSTER/ECS_SERVICE do not name the service")
        if env.get("HOT_RELOAD") != ev(m, m.locals["container_env"]["ENABLE_SECRET_RELOAD"]):
            out.append(f"{fn.addr}[{kind}]: HOT_RELOAD differs from the task's ENABLE_SECRET_RELOAD")
        if env.get("ROTATION_KIND", kind) != kind:
            out.append(f"{fn.addr}[{kind}]: ROTATION_KIND is {env.get('ROTATION_KIND')!r}")
    text = rotation_env_text(m, "db-user")
    if "MASTER_SECRET_ARN" not in text or "aws_secretsmanager_secret." not in text:
        out.append("the db-user function needs MASTER_SECRET_ARN (a secret of this stack)")
    text = rotation_env_text(m, "valkey-user")
    for k in ("VALKEY_HOST", "ELASTICACHE_USER_ID"):
        if k not in text:
            out.append(f"the valkey-user function needs {k}")
    # The zips are the ones `make lambdas` builds.
    import os
    mk = os.path.join(tree.repo, "Makefile")
    if os.path.exists(mk):
        with open(mk, encoding="utf-8") as f:
            mtext = f.read()
        kinds = re.search(r"^LAMBDA_KINDS\s*=\s*(.+)$", mtext, re.M)
        if kinds and "rotate-%.zip" in mtext:
            want = set(kinds.group(1).split())
            have = set(envs)
            if want != have:
                out.append(f"functions {sorted(have)} but `make lambdas` builds {sorted(want)}")
            for fn in fns:
                if "rotate-${each.key}.zip" not in str(fn.get("filename")):
                    out.append(f"{fn.addr}: filename must be <dir>/rotate-<kind>.zip as `make lambdas` names them")
    return out


@check
def rotation_iam_least_privilege(tree):
    m = tree.main
    out = []
    fns = m.all("aws_lambda_function")
    for fn in fns:
        role = target(fn.get("role", ""))
        sts = role_statements(m, role)
        managed = " ".join(role_managed_policies(m, role))
        for a in ("secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue",
                  "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"):
            st = [s for s in sts if s.allows(a)]
            if not st:
                out.append(f"{role}: lacks {a}")
            for s in st:
                if s.resources in ("*", ["*"]):
                    out.append(f"{s}: {a} on every secret")
        if not [s for s in sts if s.allows("kms:Decrypt") and "aws_kms_key." in s.resources_text(m)]:
            out.append(f"{role}: no kms:Decrypt on the secrets' key")
        upd = [s for s in sts if s.allows("ecs:UpdateService")]
        if not upd:
            out.append(f"{role}: lacks ecs:UpdateService")
        for s in upd:
            res = ev(m, s.resources)
            if not (isinstance(res, list) and res and all(isinstance(r, str) and ":service/" in r for r in res)):
                out.append(f"{s}: ecs:UpdateService must be limited to the service ({res})")
            else:
                svc = first(m.all("aws_ecs_service"))
                svc_name = ev(m, svc.get("name")) if svc else None
                if not all(r.endswith("/" + str(svc_name)) for r in res):
                    out.append(f"{s}: ecs:UpdateService on {res}, not on the service {svc_name}")
        if "AWSLambdaVPCAccessExecutionRole" not in managed and not [s for s in sts if s.allows("ec2:CreateNetworkInterface")]:
            out.append(f"{role}: no VPC access (ENI) permissions")
    # The Valkey function sets passwords with ModifyUser; the DB one reads
    # the master secret.
    ctx = context(m)
    texts = [s for fn in fns for s in role_statements(m, target(fn.get("role", "")))]
    if not [s for s in texts if s.allows("elasticache:ModifyUser") and "aws_elasticache_user." in s.resources_text(m)]:
        out.append("no rotation role may elasticache:ModifyUser on the Valkey user")
    master = master_secret(m)
    if not master or not [s for s in texts if s.allows("secretsmanager:GetSecretValue") and master in targets(s.resources_text(m))]:
        out.append("the DB rotation role cannot read the master secret (MASTER_SECRET_ARN)")
    return out


# --------------------------------------------------------------------------
# Observability


@check
def cloudtrail_multi_region_validated_encrypted(tree):
    m = tree.main
    t = first(m.all("aws_cloudtrail"))
    if t is None:
        return ["no CloudTrail trail"]
    out = []
    if t.get("is_multi_region_trail") is not True:
        out.append("the trail must be multi-region")
    if t.get("enable_log_file_validation") is not True:
        out.append("log file validation must be on")
    if "aws_kms_key." not in str(t.get("kms_key_id")):
        out.append("the trail must encrypt with a customer managed key")
    if t.get("include_global_service_events") is False:
        out.append("the trail must include global service events (IAM, STS)")
    return out


@check
def cloudtrail_bucket_policy(tree):
    m = tree.main
    t = first(m.all("aws_cloudtrail"))
    b = m.by_addr(target(t.get("s3_bucket_name", "")) or "") if t else None
    if b is None:
        return ["the trail's bucket is not a bucket of this stack"]
    pols = bucket_settings(m, b.addr, "aws_s3_bucket_policy")
    sts = policy_doc(m, pols[0].get("policy", "")) if pols else []
    out = []
    ct = [s for s in sts or [] if "cloudtrail.amazonaws.com" in s.service_principals()]
    if not [s for s in ct if s.allows("s3:GetBucketAcl")]:
        out.append("the trail bucket policy lacks the CloudTrail ACL check")
    w = [s for s in ct if s.allows("s3:PutObject")]
    if not w:
        out.append("the trail bucket policy lacks CloudTrail's PutObject")
    for s in w:
        conds = {c[1]: c[2] for c in s.conditions}
        if conds.get("s3:x-amz-acl") != ["bucket-owner-full-control"]:
            out.append(f"{s}: PutObject must require bucket-owner-full-control")
    if "aws_s3_bucket_policy" not in " ".join(as_list(t.get("depends_on"))):
        out.append("the trail must depend on its bucket policy")
    key = m.by_addr(target(t.get("kms_key_id", "")) or "")
    ksts = policy_doc(m, key.get("policy", "")) if key else None
    if not ksts or not [s for s in ksts if "cloudtrail.amazonaws.com" in s.service_principals() and s.allows("kms:GenerateDataKey")]:
        out.append("the trail's key policy does not let CloudTrail encrypt")
    return out


ALLOWED_RETENTIONS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}


@check
def log_groups_retention_and_kms(tree):
    m = tree.main
    out = []
    ctx = context(m)
    groups = m.all("aws_cloudwatch_log_group")
    for g in groups:
        r = g.get("retention_in_days")
        if r is None or "var." not in m.expand(str(r)):
            out.append(f"{g.addr}: retention must come from a variable")
        elif ev(m, r, ctx) not in ALLOWED_RETENTIONS:
            out.append(f"{g.addr}: retention {ev(m, r, ctx)!r} is not a CloudWatch value")
        if "aws_kms_key." not in str(g.get("kms_key_id")):
            out.append(f"{g.addr}: not encrypted with a customer managed key")
    # Services that would create a log group of their own (no retention, no
    # key) find ours instead.
    names = []
    for g in groups:
        names.append(m.expand(g.get("name", "")))
    c = cluster(m)
    if c is not None and c.get("enabled_cloudwatch_logs_exports"):
        want = ev(m, "/aws/rds/cluster/${local.aurora_cluster_id}/postgresql") if "aurora_cluster_id" in m.locals else None
        have = [ev(m, g.get("name"), ctx) for g in groups]
        cid = ev(m, c.get("cluster_identifier"), ctx)
        if f"/aws/rds/cluster/{cid}/postgresql" not in have:
            out.append("no log group /aws/rds/cluster/<cluster>/postgresql: RDS would create one without retention")
    ecs = first(m.all("aws_ecs_cluster"))
    if ecs is not None:
        cname = ev(m, ecs.get("name"), ctx)
        have = [ev(m, g.get("name"), ctx) for g in groups]
        if f"/aws/ecs/containerinsights/{cname}/performance" not in have:
            out.append("no Container Insights log group: ECS would create one without our key")
    key = m.resource("aws_kms_key", "logs")
    if key is not None:
        sts = policy_doc(m, key.get("policy", "")) or []
        if not [s for s in sts if any(p.startswith("logs.") for p in s.service_principals()) and s.allows("kms:GenerateDataKey")]:
            out.append("the logs key policy does not let CloudWatch Logs use it")
    return out


@check
def dashboard_exists(tree):
    m = tree.main
    d = first(m.all("aws_cloudwatch_dashboard"))
    if d is None:
        return ["no CloudWatch dashboard"]
    body = str(d.get("dashboard_body"))
    missing = [ns for ns in ("AWS/ApplicationELB", "AWS/ECS", "AWS/RDS", "AWS/ElastiCache") if ns not in body]
    return [f"the dashboard shows nothing from {missing}"] if missing else []


REQUIRED_ALARMS = [
    ("AWS/ApplicationELB", ("HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count"), "ALB 5xx"),
    ("AWS/ApplicationELB", ("TargetResponseTime",), "p99 target response time"),
    ("AWS/ApplicationELB", ("UnHealthyHostCount",), "unhealthy hosts"),
    ("AWS/ECS", ("CPUUtilization",), "ECS CPU"),
    ("AWS/ECS", ("MemoryUtilization",), "ECS memory"),
    ("AWS/RDS", ("CPUUtilization",), "Aurora CPU"),
    ("AWS/RDS", ("ServerlessDatabaseCapacity", "ACUUtilization"), "Aurora ACU"),
    ("AWS/RDS", ("DatabaseConnections",), "Aurora connections"),
    ("AWS/ElastiCache", ("ElastiCacheProcessingUnits", "ThrottledCmds", "BytesUsedForCache", "CurrItems"), "Valkey"),
    ("AWS/Lambda", ("Errors",), "rotation failures"),
]


@check
def alarms_cover_required_metrics(tree):
    m = tree.main
    alarms = m.all("aws_cloudwatch_metric_alarm")
    out = []
    for ns, metrics, what in REQUIRED_ALARMS:
        found = [a for a in alarms if a.get("namespace") == ns and a.get("metric_name") in metrics]
        if not found:
            out.append(f"no alarm for {what} ({ns} {'/'.join(metrics)})")
    p99 = [a for a in alarms if a.get("metric_name") == "TargetResponseTime"]
    if p99 and not [a for a in p99 if a.get("extended_statistic") == "p99"]:
        out.append("the latency alarm must use the p99 statistic")
    # One Errors alarm per rotation function.
    lam = [a for a in alarms if a.get("namespace") == "AWS/Lambda" and a.get("metric_name") == "Errors"]
    fns = m.all("aws_lambda_function")
    for fn in fns:
        covered = [a for a in lam if fn.addr in m.expand(a.get("dimensions", "")) and
                   (fn.get("for_each") is None or a.get("for_each") is not None)]
        if not covered:
            out.append(f"no Errors alarm for {fn.addr}")
        elif fn.get("for_each") is not None:
            fk = ev(m, fn.get("for_each"))
            ak = ev(m, covered[0].get("for_each"))
            if isinstance(fk, dict) and isinstance(ak, dict) and set(fk) != set(ak):
                out.append(f"rotation alarms cover {sorted(ak)}, functions are {sorted(fk)}")
    return out


@check
def alarms_notify_sns(tree):
    m = tree.main
    out = []
    topic = first(m.all("aws_sns_topic"))
    if topic is None:
        return ["no alarm topic"]
    for a in m.all("aws_cloudwatch_metric_alarm"):
        if topic.addr not in m.expand(a.get("alarm_actions", "")):
            out.append(f"{a.addr}: alarm_actions do not reach {topic.addr}")
    return out


@check
def sns_topic_encrypted_and_cloudwatch_can_use_key(tree):
    """The alarm topic is encrypted with a CMK whose policy lets
    cloudwatch.amazonaws.com use it (else alarms publish nothing)."""
    m = tree.main
    topic = first(m.all("aws_sns_topic"))
    if topic is None:
        return ["no alarm topic"]
    key = m.by_addr(target(topic.get("kms_master_key_id", "")) or "")
    if key is None or key.type != "aws_kms_key":
        return [f"{topic.addr} is not encrypted with a customer managed key of this stack"]
    sts = policy_doc(m, key.get("policy", ""))
    if sts is None:
        return [f"{key.addr} has no key policy document"]
    out = []
    for action in ("kms:Decrypt", "kms:GenerateDataKey"):
        if not [s for s in sts if "cloudwatch.amazonaws.com" in s.service_principals() and s.allows(action)]:
            out.append(f"{key.addr}: the key policy does not let cloudwatch.amazonaws.com {action}")
    for s in sts:
        if s.effect == "Deny" and "cloudwatch.amazonaws.com" in s.service_principals():
            out.append(f"{s}: denies CloudWatch")
    return out


@check
def alarm_email_subscription_optional(tree):
    m = tree.main
    topic = first(m.all("aws_sns_topic"))
    subs = [s for s in m.all("aws_sns_topic_subscription") if s.get("protocol") == "email"]
    if not subs:
        return ["no e-mail subscription on the alarm topic"]
    s = subs[0]
    out = []
    if topic is None or topic.addr not in str(s.get("topic_arn")):
        out.append("the e-mail subscription is not on the alarm topic")
    cnt = s.get("count")
    if cnt is None or "var." not in cnt:
        out.append("the e-mail subscription must be optional (count on a variable)")
    else:
        var = re.search(r"var\.([A-Za-z0-9_]+)", cnt).group(1)
        if ev(m, cnt, context(m, **{var: "oncall@example.com"})) != 1 or ev(m, cnt, context(m, **{var: None})) != 0:
            out.append(f"the subscription count does not follow var.{var}")
    return out


# --------------------------------------------------------------------------
# Backup


@check
def backup_vault_cmk(tree):
    m = tree.main
    v = first(m.all("aws_backup_vault"))
    if v is None:
        return ["no backup vault"]
    if "aws_kms_key." not in str(v.get("kms_key_arn")):
        return ["the backup vault must use a customer managed key"]
    return []


@check
def backup_plan_rules_retention(tree):
    m = tree.main
    plan = first(m.all("aws_backup_plan"))
    if plan is None:
        return ["no backup plan"]
    rules = {r.get("rule_name"): r for r in blocks(plan.body, "rule")}
    want = {"daily": 35, "weekly": 90, "monthly": 365, "yearly": 7 * 365}
    out = []
    ctx = context(m)
    for name, days in want.items():
        r = rules.get(name)
        if r is None:
            out.append(f"no {name} rule")
            continue
        d = ev(m, get(r, "lifecycle.delete_after"), ctx)
        if not isinstance(d, (int, float)) or d < days:
            out.append(f"{name} rule keeps {d!r} days; at least {days}")
        if "var." not in str(get(r, "lifecycle.delete_after")):
            out.append(f"{name} rule retention must come from a variable")
        cold = get(r, "lifecycle.cold_storage_after")
        if cold is not None:
            c = ev(m, cold, ctx)
            if isinstance(d, (int, float)) and isinstance(c, (int, float)) and d - c < 90:
                out.append(f"{name}: delete_after must be 90+ days after cold_storage_after")
            if get(r, "lifecycle.opt_in_to_archive_for_supported_resources") is not True:
                out.append(f"{name}: cold storage only where supported (opt_in_to_archive_for_supported_resources)")
    for name in ("monthly", "yearly"):
        r = rules.get(name)
        if r is not None and get(r, "lifecycle.cold_storage_after") is None:
            out.append(f"{name}: long retention should move to cold storage where allowed")
    return out


@check
def backup_selection_aurora(tree):
    m = tree.main
    sel = first(m.all("aws_backup_selection"))
    if sel is None:
        return ["no backup selection"]
    out = []
    if "aws_rds_cluster." not in str(sel.get("resources")):
        out.append("the backup selection does not include the Aurora cluster")
    role = m.by_addr(target(sel.get("iam_role_arn", "")) or "")
    if role is None or role.type != "aws_iam_role":
        out.append("the backup selection has no IAM role of this stack")
    elif not [p for p in role_managed_policies(m, role.addr) if "AWSBackupServiceRolePolicyForBackup" in p]:
        out.append(f"{role.addr} lacks AWSBackupServiceRolePolicyForBackup")
    return out


@check
def backup_cross_region_copy_optional(tree):
    m = tree.main
    plan = first(m.all("aws_backup_plan"))
    if plan is None:
        return ["no backup plan"]
    out = []
    ctx_on = context(m, backup_copy_vault_arn="arn:aws:backup:eu-central-1:123456789012:backup-vault:dr")
    for r in blocks(plan.body, "rule"):
        dyn = blocks(r, "dynamic.copy_action")
        if not dyn:
            out.append(f"rule {r.get('rule_name')}: no optional copy_action")
            continue
        fe = dyn[0].get("for_each")
        if "var.backup_copy_vault_arn" not in str(fe):
            out.append(f"rule {r.get('rule_name')}: copy_action must follow var.backup_copy_vault_arn")
            continue
        on, off = ev(m, fe, ctx_on), ev(m, fe)
        if not (isinstance(on, list) and len(on) == 1 and off == []):
            out.append(f"rule {r.get('rule_name')}: copy_action for_each gives {on} when set and {off} when not")
    return out


# --------------------------------------------------------------------------
# Budget


@check
def budget_filter_interpolates_project(tree):
    """The budget's TagKeyValue filter is "user:Project$<project>", computed;
    "$${" would make it the literal text "${var.project}"."""
    m = tree.main
    b = first(m.all("aws_budgets_budget"))
    if b is None:
        return ["no budget"]
    out = []
    filters = [f for f in blocks(b.body, "cost_filter") if f.get("name") == "TagKeyValue"]
    if not filters:
        return ["the budget has no TagKeyValue cost filter"]
    for f in filters:
        for raw in as_list(f.get("values")):
            if "$${" in str(raw):
                out.append(f"cost filter value {raw!r} contains the $${{ escape: the filter is a literal string")
            if "var.project" not in str(raw):
                out.append(f"cost filter value {raw!r} does not interpolate var.project")
            for proj in ("kiln", "zz-top"):
                val = ev(m, raw, context(m, project=proj))
                if val != f"user:Project${proj}":
                    out.append(f"cost filter value is {val!r} for project {proj!r}; expected 'user:Project${proj}'")
    if "Project" not in str(first(m.providers).body if m.providers else ""):
        out.append("the Project tag the budget filters on is not a default tag")
    return out


# --------------------------------------------------------------------------
# Naming

NAME_ATTRS = ("name", "name_prefix", "bucket", "identifier", "cluster_identifier", "function_name",
              "user_id", "user_group_id", "alarm_name", "dashboard_name", "family", "final_snapshot_identifier",
              "statement_id")

HYPHENATED = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
ALB = r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$"

# (type, attribute) -> (max length, regex or None); None: not a name we own.
NAME_RULES = {
    ("aws_s3_bucket", "bucket"): (63, r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    ("aws_lb", "name"): (32, ALB),
    ("aws_lb_target_group", "name"): (32, ALB),
    ("aws_lb_target_group", "name_prefix"): (6, ALB),
    ("aws_iam_role", "name"): (64, r"^[\w+=,.@-]+$"),
    ("aws_iam_role", "name_prefix"): (38, r"^[\w+=,.@-]+$"),
    ("aws_iam_role_policy", "name"): (128, r"^[\w+=,.@-]+$"),
    ("aws_iam_policy", "name"): (128, r"^[\w+=,.@-]+$"),
    ("aws_lambda_function", "function_name"): (64, r"^[A-Za-z0-9_-]+$"),
    ("aws_lambda_permission", "statement_id"): (100, r"^[A-Za-z0-9_-]+$"),
    ("aws_elasticache_serverless_cache", "name"): (40, HYPHENATED),
    ("aws_elasticache_user", "user_id"): (40, HYPHENATED),
    ("aws_elasticache_user", "user_name"): (120, r"^[A-Za-z0-9-]+$"),
    ("aws_elasticache_user_group", "user_group_id"): (40, HYPHENATED),
    ("aws_rds_cluster", "cluster_identifier"): (63, HYPHENATED),
    ("aws_rds_cluster", "final_snapshot_identifier"): (255, HYPHENATED),
    ("aws_rds_cluster_instance", "identifier"): (63, HYPHENATED),
    ("aws_rds_cluster_parameter_group", "name"): (255, HYPHENATED),
    ("aws_db_subnet_group", "name"): (255, r"^[a-z0-9 ._-]+$"),
    ("aws_db_proxy", "name"): (60, HYPHENATED),
    ("aws_ecs_cluster", "name"): (255, r"^[A-Za-z0-9_-]+$"),
    ("aws_ecs_service", "name"): (255, r"^[A-Za-z0-9_-]+$"),
    ("aws_ecs_task_definition", "family"): (255, r"^[A-Za-z0-9_-]+$"),
    ("aws_ecr_repository", "name"): (256, r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"),
    ("aws_secretsmanager_secret", "name"): (512, r"^[A-Za-z0-9/_+=.@-]+$"),
    ("aws_cloudwatch_log_group", "name"): (512, r"^[A-Za-z0-9_\-/.#]+$"),
    ("aws_cloudwatch_metric_alarm", "alarm_name"): (255, r"^[^\x00-\x1f]+$"),
    ("aws_cloudwatch_dashboard", "dashboard_name"): (255, r"^[A-Za-z0-9_-]+$"),
    ("aws_sns_topic", "name"): (256, r"^[A-Za-z0-9_-]+$"),
    ("aws_kms_alias", "name"): (256, r"^alias/(?!aws/)[A-Za-z0-9/_-]+$"),
    ("aws_backup_vault", "name"): (50, r"^[A-Za-z0-9_-]{2,50}$"),
    ("aws_backup_plan", "name"): (50, r"^[A-Za-z0-9_.-]+$"),
    ("aws_backup_selection", "name"): (50, r"^[A-Za-z0-9_.-]+$"),
    ("aws_cloudtrail", "name"): (128, r"^[A-Za-z0-9][A-Za-z0-9._-]{1,126}[A-Za-z0-9]$"),
    ("aws_budgets_budget", "name"): (100, r"^[^:\\]+$"),
    ("aws_globalaccelerator_accelerator", "name"): (64, ALB),
    ("aws_security_group", "name"): (255, r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]+$"),
    ("aws_appautoscaling_policy", "name"): (255, r"^[^:/|]+$"),
    ("aws_dynamodb_table", "name"): (255, r"^[A-Za-z0-9_.-]{3,255}$"),
    ("aws_route53_record", "name"): (253, None),  # the given domain or ACM's record
    ("aws_rds_cluster_parameter_group", "family"): (255, None),  # not a name
}


def name_scenarios(module):
    """The inputs names must fit: the longest project and environment the
    validations accept (computed, not assumed), in several shapes, and the
    longest region code."""
    def longest(var, shapes):
        best = None
        for n in range(1, 64):
            for shape in shapes:
                cand = shape(n)
                if len(cand) == n and validations_pass(module, var, cand):
                    best = n
        return best

    shapes = [lambda n: "a" * n, lambda n: ("ab-" * 30)[:n].rstrip("-").ljust(n, "b")]
    out = []
    pmax = longest("project", shapes) if "project" in module.variables else None
    emax = longest("environment", shapes) if "environment" in module.variables else None
    projects = ["kiln"] + ([s(pmax) for s in shapes] if pmax else [])
    envs = ["production"] + ([s(emax) for s in shapes] if emax else [])
    if "environment" not in module.variables:
        envs = [None]
    for p in projects:
        for e in envs:
            for region in ("eu-west-1", LONGEST_REGION):
                over = {"project": p}
                if e is not None:
                    over["environment"] = e
                out.append((over, region))
    return out, pmax, emax


def instances(m, block, ctx):
    """Evaluation contexts for each instance of a count/for_each block."""
    if block.get("for_each") is not None:
        coll = ev(m, block.get("for_each"), ctx)
        if isinstance(coll, dict):
            return [ctx.child(each={"key": k, "value": v}) for k, v in coll.items()]
        if isinstance(coll, list):
            return [ctx.child(each={"key": k, "value": k}) for k in coll]
        return None
    if block.get("count") is not None:
        n = ev(m, block.get("count"), ctx)
        if isinstance(n, int):
            return [ctx.child(count_index=i) for i in range(n)]
        return [ctx.child(count_index=0)]
    return [ctx]


@check
def names_within_aws_limits(tree):
    out = []
    for m in tree.modules():
        scenarios, pmax, emax = name_scenarios(m)
        if m is tree.main and (pmax is None or emax is None):
            out.append("cannot find the longest valid project/environment")
            continue
        for over, region in scenarios:
            ctx = context(m, region=region, **over)
            for b in m.resources:
                for attr in NAME_ATTRS:
                    if attr not in b.body:
                        continue
                    rule = NAME_RULES.get((b.type, attr))
                    if rule is None and targets(b.body[attr]):
                        continue  # names another resource, checked there
                    if rule is None:
                        out.append(f"{b.addr}.{attr}: no naming rule for {b.type} (add its AWS limits to NAME_RULES)")
                        continue
                    maxlen, rx = rule
                    if rx is None:
                        continue
                    insts = instances(m, b, ctx)
                    if insts is None:
                        out.append(f"{b.addr}: cannot evaluate for_each to check {attr}")
                        continue
                    for ictx in insts:
                        try:
                            val = evaluate(b.body[attr], ictx)
                        except EvalError as e:
                            out.append(f"{b.addr}.{attr}: cannot evaluate ({e})")
                            continue
                        if not isinstance(val, str):
                            out.append(f"{b.addr}.{attr}: evaluates to {val!r}, not a string known before apply")
                            continue
                        if len(val) > maxlen:
                            out.append(f"{b.addr}.{attr} = {val!r} is {len(val)} characters (limit {maxlen}) for {over}, {region}")
                        if not re.match(rx, val):
                            out.append(f"{b.addr}.{attr} = {val!r} is not a valid {b.type} {attr}")
                        if b.type == "aws_s3_bucket" and (".." in val or val.startswith("xn--") or val.endswith("-s3alias")):
                            out.append(f"{b.addr}.{attr} = {val!r} breaks S3 naming rules")
    return sorted(set(out))


@check
def name_validations(tree):
    m = tree.main
    out = []
    accept = ["a" * 20, "production", "staging-eu-1", "ab-ab-ab-ab-ab-ab-ab"]
    reject = ["a" * 21, "Production", "1prod", "-prod", "prod-", "pr--od", "prod_1", ""]
    for v in accept:
        if not validations_pass(m, "environment", v):
            out.append(f"environment validation rejects {v!r}")
    for v in reject:
        if validations_pass(m, "environment", v):
            out.append(f"environment validation accepts {v!r}")
    env_conditions = " ".join(str(vb.get("condition")) for vb in blocks(m.variables["environment"].body, "validation"))
    if "^[a-z][a-z0-9-]{0,19}$" not in env_conditions:
        out.append("the environment validation must use ^[a-z][a-z0-9-]{0,19}$")
    for mod in tree.modules():
        if "project" not in mod.variables:
            out.append(f"{mod.folder}: no project variable")
            continue
        if not validations_pass(mod, "project", "a" * 12) or validations_pass(mod, "project", "a" * 13):
            out.append(f"{mod.folder}: project must accept 12 characters and refuse 13")
        if validations_pass(mod, "project", "Kiln") or validations_pass(mod, "project", "ki--ln"):
            out.append(f"{mod.folder}: project accepts upper case or double hyphens")
    return out


@check
def bucket_names_unique_per_account_region(tree):
    out = []
    for m in tree.modules():
        ctx = context(m)
        for b in m.all("aws_s3_bucket"):
            val = ev(m, b.get("bucket"), ctx)
            if not isinstance(val, str) or ACCOUNT_ID not in val or "eu-west-1" not in val:
                out.append(f"{b.addr}: bucket name {val!r} must include the account id and region")
            if b.get("bucket_prefix"):
                out.append(f"{b.addr}: use a computed name, not bucket_prefix (stable across plans)")
    return out


@check
def state_backend_names_match_backend_config(tree):
    """backend.hcl.example names the bucket and lock table state-backend/
    creates, with the stated example inputs; the main stack's backend block
    leaves them to that file."""
    out = []
    if tree.backend is None:
        return ["no state-backend stack"]
    if tree.backend_example is None:
        return ["no backend.hcl.example"]
    b = tree.backend
    bucket = first(b.all("aws_s3_bucket"))
    table = first(b.all("aws_dynamodb_table"))
    if bucket is None or table is None:
        return ["state-backend must create an S3 bucket and a DynamoDB table"]
    ex = tree.backend_example
    # The example's inputs: project "kiln", account 123456789012, eu-west-1.
    region = ex.get("region")
    ctx = context(b, region=region or "eu-west-1", project="kiln")
    want_bucket = ev(b, bucket.get("bucket"), ctx)
    want_table = ev(b, table.get("name"), ctx)
    if ex.get("bucket") != want_bucket:
        out.append(f"backend.hcl.example bucket {ex.get('bucket')!r} != state-backend's {want_bucket!r}")
    if ex.get("dynamodb_table") != want_table:
        out.append(f"backend.hcl.example dynamodb_table {ex.get('dynamodb_table')!r} != state-backend's {want_table!r}")
    if ex.get("encrypt") is not True:
        out.append("the backend must encrypt state")
    # The stack's output writes backend.hcl from the resources themselves.
    o = b.outputs.get("backend_config")
    if o is None:
        out.append("state-backend has no backend_config output")
    else:
        text = str(o.get("value"))
        for ref in (bucket.addr + ".bucket", table.addr + ".name"):
            if ref not in text:
                out.append(f"backend_config output does not use {ref}")
        for key in ("bucket", "region", "dynamodb_table", "encrypt"):
            if not re.search(rf"^\s*{key}\s*=", text, re.M):
                out.append(f"backend_config output lacks {key}")
    # The main stack: an S3 backend with the names left to backend.hcl.
    backends = [get(body, "backend") for _, body in tree.main.terraform if get(body, "backend")]
    s3 = [x for be in backends for x in as_list(be) if isinstance(x, dict) and "s3" in x]
    if not s3:
        out.append("the main stack has no S3 backend block")
    else:
        conf = get(s3[0], "s3") or {}
        conf = conf[0] if isinstance(conf, list) and conf else conf
        for key in ("bucket", "dynamodb_table"):
            if key in (conf or {}):
                out.append(f"backend.tf hard-codes {key}; it must come from backend.hcl")
    # Same project naming rules on both sides.
    mp = tree.main.variables.get("project")
    bp = b.variables.get("project")
    if mp is not None and bp is not None:
        for cand in ("kiln", "a" * 12, "a" * 13, "Kiln"):
            if validations_pass(tree.main, "project", cand) != validations_pass(b, "project", cand):
                out.append(f"project {cand!r} is valid in one stack and not the other")
    return out


ALLOWED_DATA_SOURCES = {
    "aws_caller_identity", "aws_region", "aws_partition", "aws_availability_zones",
    "aws_elb_service_account", "aws_iam_policy_document",
}


@check
def no_create_if_missing_data_sources(tree):
    """Data sources only look up what this configuration never creates; no
    try()/can() fallbacks around lookups (they flip on the second plan)."""
    out = []
    for m in tree.modules():
        created = {r.type for r in m.resources}
        for d in m.data_sources:
            if d.type in created:
                out.append(f"{d.addr}: looks up a {d.type}, which this stack creates (create-if-missing)")
            elif d.type not in ALLOWED_DATA_SOURCES:
                out.append(f"{d.addr}: data source type {d.type} is not a pure lookup this suite knows")
            if re.search(r"\b(try|can)\(", str(d.get("count", "")) + str(d.get("for_each", ""))):
                out.append(f"{d.addr}: count/for_each with try()/can()")
        for b in m.resources + m.data_sources:
            text = str(b.body)
            if re.search(r"\b(try|can)\(\s*data\.", text) or re.search(r"length\(\s*data\.[^)]*\)\s*[>=!]", text):
                out.append(f"{b.addr}: falls back on whether a data source found something")
        for k, v in m.locals.items():
            if re.search(r"\b(try|can)\(\s*data\.", str(v)):
                out.append(f"local.{k}: falls back on whether a data source found something")
    return out


@check
def default_tags_on_every_provider(tree):
    out = []
    for m in tree.modules():
        aws = [p for p in m.providers if p.type == "aws"]
        if not aws:
            out.append(f"{m.folder}: no aws provider block")
        for p in aws:
            label = p.body.get("alias", "default")
            tags = get(p.body, "default_tags.tags")
            if tags is None:
                out.append(f"{m.folder}: provider aws ({label}) has no default_tags")
                continue
            text = str(tags)
            for key in ("Project", "Environment", "ManagedBy"):
                if not re.search(rf"\b{key}\b", text):
                    out.append(f"{m.folder}: provider aws ({label}) default_tags lack {key}")
            if "var.project" not in text:
                out.append(f"{m.folder}: provider aws ({label}) Project tag is not var.project")
            # The fixed tags must win over user-supplied extra tags.
            if text.startswith("${merge(") and text.find("Project") < text.find("var.extra_tags"):
                out.append(f"{m.folder}: extra tags can override Project/Environment/ManagedBy")
        for mod in m.modules:
            if "providers" not in mod.body:
                out.append(f"{mod.addr}: pass the providers explicitly")
    return out


@check
def variables_typed_and_described(tree):
    out = []
    for m in tree.modules():
        for name, v in m.variables.items():
            if not v.body.get("type"):
                out.append(f"{m.folder}: variable {name} has no type")
            if not str(v.body.get("description", "")).strip():
                out.append(f"{m.folder}: variable {name} has no description")
    return out


@check
def outputs_described(tree):
    out = []
    for m in tree.modules():
        for name, o in m.outputs.items():
            if not str(o.body.get("description", "")).strip():
                out.append(f"{m.folder}: output {name} has no description")
    return out


@check
def kms_keys_rotate(tree):
    out = []
    for m in tree.modules():
        for k in m.all("aws_kms_key"):
            if k.get("enable_key_rotation") is not True:
                out.append(f"{k.addr}: enable_key_rotation must be true")
    return out


@check
def state_backend_hardened(tree):
    b = tree.backend
    if b is None:
        return ["no state-backend stack"]
    out = []
    bucket = first(b.all("aws_s3_bucket"))
    table = first(b.all("aws_dynamodb_table"))
    if bucket is None or table is None:
        return ["state-backend must create an S3 bucket and a DynamoDB table"]
    if table.get("billing_mode") != "PAY_PER_REQUEST":
        out.append("lock table must be PAY_PER_REQUEST")
    if get(table.body, "point_in_time_recovery.enabled") is not True:
        out.append("lock table needs point-in-time recovery")
    if get(table.body, "server_side_encryption.enabled") is not True:
        out.append("lock table needs server-side encryption")
    if table.get("hash_key") != "LockID":
        out.append("lock table hash key must be LockID")
    if "prevent_destroy" not in str(get(bucket.body, "lifecycle")):
        out.append("the state bucket should be protected with prevent_destroy")
    return out


@check
def provider_version_pinned(tree):
    out = []
    for m in tree.modules():
        req = [get(body, "required_providers") for _, body in m.terraform if get(body, "required_providers")]
        aws = None
        for r in req:
            r = r[0] if isinstance(r, list) else r
            if isinstance(r, dict) and "aws" in r:
                aws = r["aws"]
        if not aws:
            out.append(f"{m.folder}: no required_providers.aws")
            continue
        v = str(aws.get("version", ""))
        if not re.fullmatch(r"~>\s*5(\.\d+)*", v):
            out.append(f"{m.folder}: aws provider version {v!r}, expected ~> 5.x")
        if aws.get("source") != "hashicorp/aws":
            out.append(f"{m.folder}: aws provider source must be hashicorp/aws")
        if not any(body.get("required_version") for _, body in m.terraform):
            out.append(f"{m.folder}: no required_version")
    return out


@check
def tfvars_example_matches_variables(tree):
    m = tree.main
    if not tree.tfvars_examples:
        return ["no *.tfvars.example"]
    out = []
    required = {n for n, v in m.variables.items() if "default" not in v.body} - {"image_tag"}
    for fname, doc in tree.tfvars_examples.items():
        for k, val in doc.items():
            if k not in m.variables:
                out.append(f"{fname}: {k} is not a variable of the stack")
            elif not validations_pass(m, k, val):
                out.append(f"{fname}: {k} = {val!r} fails the variable's validation")
        for k in sorted(required - set(doc)):
            out.append(f"{fname}: the required variable {k} is not set")
    return out


@check
def readme_documents_every_variable(tree):
    import os
    path = os.path.join(tree.root, "README.md")
    if not os.path.exists(path):
        return ["infra/README.md is missing"]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = [f"README.md does not document variable {n}" for n in tree.main.variables if f"`{n}`" not in text]
    if "make infra-check" not in text:
        out.append("README.md does not say what make infra-check proves")
    return out


REQUIRED_FILES = ["network.tf", "edge.tf", "service.tf", "data.tf", "cache.tf", "secrets.tf", "rotation.tf",
                  "observability.tf", "backup.tf", "budget.tf", "iam.tf", "kms.tf", "variables.tf", "outputs.tf",
                  "locals.tf", "providers.tf", "versions.tf", "backend.tf"]


@check
def files_split_by_concern(tree):
    return [f"infra/{f} is missing" for f in REQUIRED_FILES if f not in tree.main.files]
