package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The Kubernetes manifests, built as kubectl apply -k builds them (krusty)
// for the base and every overlay, decoded strictly into the API's types,
// hold together: selectors select the pods they are for, probes and
// Services name ports the containers have, the gateway's variables are
// settings it takes, every pod of the gateway is behind a disruption budget
// and a network policy, and its ops port is open to the monitoring
// namespace only.

// monitoringLabel is the label of the namespaces whose pods may reach the
// gateway's ops port (networkpolicy.yaml; docs/deployment.md says so).
const monitoringLabel, monitoringValue = "patientmsg.org/monitoring", "true"

// cluster is what kustomize builds of a directory of deployments/, every
// object decoded into its Kubernetes type.
type cluster struct {
	dir          string
	deployments  []appsv1.Deployment
	statefulSets []appsv1.StatefulSet
	services     []corev1.Service
	configMaps   map[string]corev1.ConfigMap
	budgets      []policyv1.PodDisruptionBudget
	policies     []networkingv1.NetworkPolicy
}

// decodeStrict decodes a Kubernetes object refusing what its type does not
// have: unknown fields (a misspelt one is silently dropped by the API
// server, or refused by kubectl), fields in the wrong case, duplicates.
func decodeStrict(raw []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(raw, v)
	return errors.Join(append(strict, err)...)
}

// decodeInto decodes an object strictly and appends it to a list.
func decodeInto[T any](raw []byte, list *[]T) error {
	var o T
	err := decodeStrict(raw, &o)
	*list = append(*list, o)
	return err
}

// kustomizeBuild builds dir of fsys as kubectl apply -k does.
func kustomizeBuild(fsys filesys.FileSystem, dir string) (cluster, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		return cluster{}, err
	}
	c := cluster{dir: filepath.Base(dir), configMaps: map[string]corev1.ConfigMap{}}
	var errs []error
	for _, r := range m.Resources() {
		raw, err := r.MarshalJSON()
		if err != nil {
			return cluster{}, err
		}
		var decodeErr error
		switch gk := r.GetApiVersion() + " " + r.GetKind(); gk {
		case "apps/v1 Deployment":
			decodeErr = decodeInto(raw, &c.deployments)
		case "apps/v1 StatefulSet":
			decodeErr = decodeInto(raw, &c.statefulSets)
		case "v1 Service":
			decodeErr = decodeInto(raw, &c.services)
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			decodeErr = decodeStrict(raw, &o)
			c.configMaps[o.Name] = o
		case "policy/v1 PodDisruptionBudget":
			decodeErr = decodeInto(raw, &c.budgets)
		case "networking.k8s.io/v1 NetworkPolicy":
			decodeErr = decodeInto(raw, &c.policies)
		default:
			decodeErr = fmt.Errorf("%s: the tests do not check this kind yet: teach them", gk)
		}
		if decodeErr != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), decodeErr))
		}
	}
	return c, errors.Join(errs...)
}

// kustomizations are the directories of deployments/ that kustomize
// builds: the base and its overlays.
func kustomizations(t *testing.T) []string {
	t.Helper()
	found, err := filepath.Glob(filepath.Join(deployments, "*", "kustomization.yaml"))
	if err != nil || len(found) < 2 {
		t.Fatalf("want the base and at least one overlay in deployments/; found %v (%v)", found, err)
	}
	var dirs []string
	for _, f := range found {
		dirs = append(dirs, filepath.Base(filepath.Dir(f)))
	}
	return dirs
}

// build builds a directory of deployments/ on disk.
func build(t *testing.T, dir string) cluster {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(deployments, dir))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kustomizeBuild(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return c
}

// exampleSecret is kubernetes/secret.example.yaml, applied beside the
// kustomization.
func exampleSecret(t *testing.T) corev1.Secret {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployments, "kubernetes", "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := decodeStrict(js, &s); err != nil {
		t.Fatalf("secret.example.yaml: %v", err)
	}
	if len(s.StringData) == 0 {
		t.Fatal("secret.example.yaml has no stringData")
	}
	return s
}

// commentedSettings are the settings a file of deployments/ shows in its
// comments.
func commentedSettings(t *testing.T, dir, file string) []assignment {
	t.Helper()
	var out []assignment
	for _, a := range readAssignments(t, filepath.Join(deployments, dir, file), yamlLine) {
		if a.commented {
			out = append(out, a)
		}
	}
	return out
}

func isSecret(name string) bool {
	if s, ok := settingByName(name); ok {
		return s.Secret
	}
	return others[name].secret
}

func TestTheKubernetesManifestsAgreeWithTheSettings(t *testing.T) {
	cm := build(t, "kubernetes").configMaps["gateway-config"].Data
	if len(cm) == 0 {
		t.Fatal("kubernetes builds no ConfigMap gateway-config with data")
	}
	cmComments := commentedSettings(t, "kubernetes", "configmap.yaml")
	secret := exampleSecret(t).StringData
	secretComments := commentedSettings(t, "kubernetes", "secret.example.yaml")

	inSecret := map[string]bool{}
	for name, v := range secret {
		checkAssignment(t.Errorf, assignment{name: name, value: v, where: "secret.example.yaml: " + name})
		inSecret[name] = true
		if _, both := cm[name]; both {
			t.Errorf("%s is in both the ConfigMap and the Secret", name)
		}
	}
	for _, a := range secretComments {
		checkAssignment(t.Errorf, a)
		inSecret[a.name] = true
	}
	for name, v := range cm {
		checkAssignment(t.Errorf, assignment{name: name, value: v, where: "configmap.yaml: " + name})
		if isSecret(name) {
			t.Errorf("configmap.yaml holds %s, a secret: it belongs in the Secret", name)
		}
	}
	for _, a := range cmComments {
		checkAssignment(t.Errorf, a)
		if isSecret(a.name) {
			t.Errorf("%s: shows %s, a secret, in the ConfigMap: it belongs in the Secret", a.where, a.name)
		}
	}
	for _, s := range settings {
		_, inConfig := cm[s.Name]
		_, setInSecret := secret[s.Name]
		if s.Required != 0 && !inConfig && !setInSecret {
			t.Errorf("neither the ConfigMap nor the Secret sets %s, which the gateway needs", s.Name)
		}
		if s.Secret && !inSecret[s.Name] {
			t.Errorf("secret.example.yaml does not show %s, a secret setting", s.Name)
		}
	}
}

func TestTheKubernetesBuildsHoldTogether(t *testing.T) {
	secret := exampleSecret(t)
	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			checkCluster(t.Errorf, build(t, dir), secret)
		})
	}
	guide, err := os.ReadFile(filepath.Join(deployments, "..", "docs", "deployment.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(guide), monitoringLabel) {
		t.Errorf("docs/deployment.md does not tell the operator to label the monitoring namespace %s", monitoringLabel)
	}
}

// workload is a Deployment or a StatefulSet: the pods it makes.
type workload struct {
	name     string // kind/name
	replicas int32
	selector *metav1.LabelSelector
	pod      corev1.PodTemplateSpec
}

func (c cluster) workloads() []workload {
	var out []workload
	replicas := func(n *int32) int32 {
		if n == nil {
			return 1
		}
		return *n
	}
	for _, d := range c.deployments {
		out = append(out, workload{"Deployment/" + d.Name, replicas(d.Spec.Replicas), d.Spec.Selector, d.Spec.Template})
	}
	for _, s := range c.statefulSets {
		out = append(out, workload{"StatefulSet/" + s.Name, replicas(s.Spec.Replicas), s.Spec.Selector, s.Spec.Template})
	}
	return out
}

// selects reports whether sel selects the pods of w (a nil or invalid
// selector selects nothing).
func selects(sel *metav1.LabelSelector, w workload) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(w.pod.Labels))
}

// hasPort reports whether a container has port p, by name or by number.
func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
		if p.Type == intstr.String {
			return cp.Name == p.StrVal
		}
		return cp.ContainerPort == p.IntVal
	})
}

// podHasPort is hasPort for any container of a pod.
func podHasPort(pod corev1.PodTemplateSpec, p intstr.IntOrString) bool {
	return slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, p) })
}

// port is the port number of a listener's address (":8081").
func port(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(p, 10, 32)
	return int32(n), err
}

// checkCluster checks what every build must hold.
func checkCluster(bad errorf, c cluster, secret corev1.Secret) {
	ws := c.workloads()
	if len(ws) == 0 {
		bad("%s: builds no Deployment or StatefulSet", c.dir)
	}

	// Every workload selects its own pods; every container's probes name
	// one of its ports.
	for _, w := range ws {
		if !selects(w.selector, w) {
			bad("%s: %s: its selector %v does not select its pods' labels %v", c.dir, w.name, w.selector, w.pod.Labels)
		}
		for _, ctr := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
			for kind, p := range map[string]*corev1.Probe{"readiness": ctr.ReadinessProbe, "liveness": ctr.LivenessProbe, "startup": ctr.StartupProbe} {
				var ports []intstr.IntOrString
				switch {
				case p == nil:
				case p.HTTPGet != nil:
					ports = append(ports, p.HTTPGet.Port)
				case p.TCPSocket != nil:
					ports = append(ports, p.TCPSocket.Port)
				case p.GRPC != nil:
					ports = append(ports, intstr.FromInt32(p.GRPC.Port))
				}
				for _, pp := range ports {
					if !hasPort(ctr, pp) {
						bad("%s: %s: container %s: its %s probe asks port %s, which the container does not have", c.dir, w.name, ctr.Name, kind, pp.String())
					}
				}
			}
		}
	}

	// Every Service selects pods, and sends to ports they have.
	for _, s := range c.services {
		var selected []workload
		for _, w := range ws {
			if len(s.Spec.Selector) > 0 && selects(metav1.SetAsLabelSelector(s.Spec.Selector), w) {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			bad("%s: Service %s: its selector %v selects no pod", c.dir, s.Name, s.Spec.Selector)
		}
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			for _, w := range selected {
				if !podHasPort(w.pod, target) {
					bad("%s: Service %s: port %s goes to %s, which the pods of %s do not have", c.dir, s.Name, sp.Name, target.String(), w.name)
				}
			}
		}
	}

	// Every disruption budget selects pods; every workload of more than
	// one pod has exactly one (the eviction API refuses pods with two).
	for _, b := range c.budgets {
		if !slices.ContainsFunc(ws, func(w workload) bool { return selects(b.Spec.Selector, w) }) {
			bad("%s: PodDisruptionBudget %s: its selector selects no pod", c.dir, b.Name)
		}
		if (b.Spec.MaxUnavailable == nil) == (b.Spec.MinAvailable == nil) {
			bad("%s: PodDisruptionBudget %s: give it maxUnavailable or minAvailable", c.dir, b.Name)
		}
	}
	for _, w := range ws {
		n := 0
		for _, b := range c.budgets {
			if selects(b.Spec.Selector, w) {
				n++
			}
		}
		if w.replicas > 1 && n != 1 {
			bad("%s: %s: %d PodDisruptionBudgets select its pods; want one (a drain could take them all at once)", c.dir, w.name, n)
		}
	}

	// Every network policy selects pods, and names ports they have.
	for _, p := range c.policies {
		var selected []workload
		for _, w := range ws {
			if selects(&p.Spec.PodSelector, w) {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			bad("%s: NetworkPolicy %s: its podSelector selects no pod", c.dir, p.Name)
		}
		for _, r := range p.Spec.Ingress {
			for _, pp := range r.Ports {
				for _, w := range selected {
					if pp.Port != nil && !podHasPort(w.pod, *pp.Port) {
						bad("%s: NetworkPolicy %s: admits port %s, which the pods of %s do not have", c.dir, p.Name, pp.Port.String(), w.name)
					}
				}
			}
		}
	}

	for _, w := range ws {
		if w.pod.Labels["app.kubernetes.io/name"] == "gateway" {
			checkGatewayPods(bad, c, w, secret)
		}
	}
}

// checkGatewayPods checks a workload of the gateway: the variables it is
// given, the configuration it starts with, its ops port, and what its
// network policies let through.
func checkGatewayPods(bad errorf, c cluster, w workload, secret corev1.Secret) {
	where := c.dir + ": " + w.name
	if len(w.pod.Spec.Containers) != 1 {
		bad("%s: %d containers; want the gateway alone", where, len(w.pod.Spec.Containers))
		return
	}
	ctr := w.pod.Spec.Containers[0]

	// The environment: the ConfigMaps and the Secret it takes whole, then
	// its own variables, each a setting.
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := c.configMaps[from.ConfigMapRef.Name]
			if !ok {
				bad("%s: takes its environment from ConfigMap %s, which the build does not hold", where, from.ConfigMapRef.Name)
			}
			for _, name := range slices.Sorted(maps.Keys(cm.Data)) {
				checkAssignment(bad, assignment{name: name, value: cm.Data[name], where: where + ": ConfigMap " + cm.Name + ": " + name})
				if isSecret(name) {
					bad("%s: ConfigMap %s holds %s, a secret: it belongs in the Secret", where, cm.Name, name)
				}
				env[from.Prefix+name] = cm.Data[name]
			}
		case from.SecretRef != nil:
			if from.SecretRef.Name != secret.Name {
				bad("%s: takes its environment from Secret %s; secret.example.yaml makes %s", where, from.SecretRef.Name, secret.Name)
			}
			for name, v := range secret.StringData {
				env[from.Prefix+name] = v
			}
		}
	}
	for _, e := range ctr.Env {
		checkAssignment(bad, assignment{name: e.Name, value: e.Value, where: where + ": env " + e.Name})
		if isSecret(e.Name) && e.Value != "" {
			bad("%s sets %s, a secret, in clear: take it from the Secret", where, e.Name)
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := c.configMaps[ref.Name].Data[ref.Key]
			if !ok {
				bad("%s: %s is taken from key %s of ConfigMap %s, which the build does not hold", where, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secret.StringData[ref.Key]
			if ref.Name != secret.Name || !ok {
				bad("%s: %s is taken from key %s of Secret %s, which secret.example.yaml does not hold", where, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		}
	}
	role, ok := Role(0), len(ctr.Args) > 0
	if ok {
		role, ok = gatewayRoles[ctr.Args[0]]
	}
	if !ok {
		bad("%s: runs %v; want serve, worker or all", where, ctr.Args)
		return
	}
	cfg, err := Load(func(k string) string { return env[k] })
	if err == nil {
		err = cfg.Validate(role)
	}
	if err != nil {
		bad("%s: the gateway would not start: %v", where, err)
		return
	}

	// The ports: the API's (serve), the ops listener's, named, and the
	// scrape annotation on the latter.
	want := map[string]string{"ops": cfg.OpsAddr}
	if role&RoleAPI != 0 {
		want["http"] = cfg.Addr
	}
	for name, addr := range want {
		n, err := port(addr)
		if err != nil {
			bad("%s: cannot tell the port of %q: %v", where, addr, err)
			continue
		}
		if !hasPort(ctr, intstr.FromString(name)) || !hasPort(ctr, intstr.FromInt32(n)) ||
			!slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == name && p.ContainerPort == n }) {
			bad("%s: want container port %s at %d (the gateway listens at %s)", where, name, n, addr)
		}
		if name == "ops" {
			if a, ok := w.pod.Annotations["prometheus.io/port"]; ok && a != strconv.Itoa(int(n)) {
				bad("%s: prometheus.io/port %s; the ops listener is at %d", where, a, n)
			}
			if role&RoleAPI != 0 && !slices.ContainsFunc(c.services, func(s corev1.Service) bool {
				return selects(metav1.SetAsLabelSelector(s.Spec.Selector), w) && slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool {
					return hasPort(corev1.Container{Ports: []corev1.ContainerPort{{Name: "ops", ContainerPort: n}}}, sp.TargetPort)
				})
			}) {
				bad("%s: no Service reaches its ops port (the queue dashboard)", where)
			}
		}
	}

	// In: the API port from anywhere, the ops port from the monitoring
	// namespace only, nothing else.
	var ingress []networkingv1.NetworkPolicyIngressRule
	var egress []networkingv1.NetworkPolicyEgressRule
	isolatedIn, isolatedOut := false, false
	for _, p := range c.policies {
		if !selects(&p.Spec.PodSelector, w) {
			continue
		}
		types := p.Spec.PolicyTypes
		if len(types) == 0 {
			types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			if len(p.Spec.Egress) > 0 {
				types = append(types, networkingv1.PolicyTypeEgress)
			}
		}
		if slices.Contains(types, networkingv1.PolicyTypeIngress) {
			isolatedIn = true
			ingress = append(ingress, p.Spec.Ingress...)
		}
		if slices.Contains(types, networkingv1.PolicyTypeEgress) {
			isolatedOut = true
			egress = append(egress, p.Spec.Egress...)
		}
	}
	if !isolatedIn {
		bad("%s: no NetworkPolicy limits what reaches its pods", where)
	}
	for _, cp := range ctr.Ports {
		var peers []string // who reaches the port: anywhere, monitoring, or the peer
		for _, r := range ingress {
			if !admits(r.Ports, cp) {
				continue
			}
			if len(r.From) == 0 {
				peers = append(peers, "anywhere")
			}
			for _, f := range r.From {
				if f.IPBlock == nil && f.PodSelector == nil && f.NamespaceSelector != nil &&
					len(f.NamespaceSelector.MatchExpressions) == 0 &&
					maps.Equal(f.NamespaceSelector.MatchLabels, map[string]string{monitoringLabel: monitoringValue}) {
					peers = append(peers, "monitoring")
				} else {
					peers = append(peers, fmt.Sprintf("%+v", f))
				}
			}
		}
		slices.Sort(peers)
		peers = slices.Compact(peers)
		switch {
		case !isolatedIn:
		case cp.Name == "http" && role&RoleAPI != 0:
			if !slices.Contains(peers, "anywhere") {
				bad("%s: its API port is not open to all (the ingress and the providers' webhooks come through it): %v", where, peers)
			}
		case cp.Name == "ops":
			if !slices.Equal(peers, []string{"monitoring"}) {
				bad("%s: its ops port is open to %v; want the namespaces labelled %s=%s only", where, peers, monitoringLabel, monitoringValue)
			}
		case len(peers) > 0:
			bad("%s: port %s is open to %v; want it closed", where, cp.Name, peers)
		}
	}

	// Out: DNS, Redis (and its sentinels), HTTPS.
	if !isolatedOut {
		bad("%s: no NetworkPolicy limits what its pods reach", where)
		return
	}
	need := map[string]corev1.ContainerPort{
		"DNS":   {ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		"HTTPS": {ContainerPort: 443},
	}
	redisPort := int32(6379)
	if u, err := url.Parse(cfg.RedisURL); err == nil && u.Port() != "" {
		n, _ := strconv.ParseInt(u.Port(), 10, 32)
		redisPort = int32(n)
	}
	need["Redis"] = corev1.ContainerPort{ContainerPort: redisPort}
	for _, a := range cfg.RedisSentinelAddrs {
		if n, err := port(a); err == nil {
			need["sentinel "+a] = corev1.ContainerPort{ContainerPort: n}
		}
	}
	for _, what := range slices.Sorted(maps.Keys(need)) {
		if !slices.ContainsFunc(egress, func(r networkingv1.NetworkPolicyEgressRule) bool { return admits(r.Ports, need[what]) }) {
			bad("%s: its pods may not reach %s (port %d)", where, what, need[what].ContainerPort)
		}
	}
}

// admits reports whether a rule's ports take in a port, by number or name
// (no ports: all of them).
func admits(ports []networkingv1.NetworkPolicyPort, cp corev1.ContainerPort) bool {
	if len(ports) == 0 {
		return true
	}
	proto := func(p *corev1.Protocol) corev1.Protocol {
		if p == nil || *p == "" {
			return corev1.ProtocolTCP
		}
		return *p
	}
	return slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool {
		if proto(p.Protocol) != proto(&cp.Protocol) {
			return false
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String:
			return p.Port.StrVal == cp.Name && cp.Name != ""
		case p.EndPort != nil:
			return p.Port.IntVal <= cp.ContainerPort && cp.ContainerPort <= *p.EndPort
		default:
			return p.Port.IntVal == cp.ContainerPort
		}
	})
}

// The checks find what they are for: each case breaks a copy of the base,
// built on an in-memory file system.
func TestTheKubernetesChecksFindFaults(t *testing.T) {
	secret := exampleSecret(t)
	base := filepath.Join(deployments, "kubernetes")
	cases := []struct {
		name, file, old, new string
		want                 string // in a complaint or the build's error
	}{
		{"a misspelt field is refused", "api.yaml",
			"containerPort: 8080", "containerPorts: 8080", `unknown field "spec.template.spec.containers[0].ports[0].containerPorts"`},
		{"a probe on a port the container lacks", "worker.yaml",
			"path: /readyz\n              port: ops", "path: /readyz\n              port: metrics", "readiness probe asks port metrics"},
		{"a Deployment selecting other pods than its own", "worker.yaml",
			"    matchLabels:\n      app.kubernetes.io/name: gateway\n      app.kubernetes.io/component: worker",
			"    matchLabels:\n      app.kubernetes.io/name: gateway\n      app.kubernetes.io/component: workers", "does not select its pods' labels"},
		{"a Service selecting no pod", "service.yaml",
			"  selector:\n    app.kubernetes.io/name: gateway\n    app.kubernetes.io/component: api\n  ports:\n    - name: http",
			"  selector:\n    app.kubernetes.io/name: gateway\n    app.kubernetes.io/component: apis\n  ports:\n    - name: http", "Service gateway-api: its selector"},
		{"a Service sending to a port the pods lack", "service.yaml",
			"targetPort: ops", "targetPort: 9090", "goes to 9090"},
		{"a variable that is no setting", "worker.yaml",
			"          envFrom:", "          env:\n            - name: GATEWAY_NO_SUCH_THING\n              value: x\n          envFrom:", "GATEWAY_NO_SUCH_THING is not a setting"},
		{"a secret set in clear", "worker.yaml",
			"          envFrom:", "          env:\n            - name: TWILIO_AUTH_TOKEN\n              value: abc\n          envFrom:", "a secret, in clear"},
		{"an ops port other than the listener's", "worker.yaml",
			"containerPort: 8081", "containerPort: 9091", "want container port ops at 8081"},
		{"no disruption budget", "kustomization.yaml",
			"  - disruption.yaml\n", "", "0 PodDisruptionBudgets select its pods"},
		{"the ops port open to every namespace", "networkpolicy.yaml",
			"      app.kubernetes.io/component: api\n  policyTypes: [\"Ingress\"]\n  ingress:\n    - ports:\n        - port: http\n",
			"      app.kubernetes.io/component: api\n  policyTypes: [\"Ingress\"]\n  ingress:\n    - ports:\n        - port: http\n        - port: ops\n",
			"its ops port is open to [anywhere monitoring]"},
		{"workers open to all", "networkpolicy.yaml",
			"  ingress:\n    - from:\n        - namespaceSelector:\n            matchLabels:\n              patientmsg.org/monitoring: \"true\"\n      ports:\n        - port: ops\n          protocol: TCP\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: gateway-egress",
			"  ingress:\n    - {}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: gateway-egress",
			"Deployment/gateway-worker: its ops port is open to [anywhere]"},
		{"no way out to Redis", "networkpolicy.yaml",
			"        - port: 6379\n          protocol: TCP\n", "", "may not reach Redis"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := filesys.MakeFsInMemory()
			entries, err := os.ReadDir(base)
			if err != nil {
				t.Fatal(err)
			}
			changed := false
			for _, e := range entries {
				raw, err := fs.ReadFile(os.DirFS(base), e.Name())
				if err != nil {
					t.Fatal(err)
				}
				text := string(raw)
				if e.Name() == tc.file {
					if !strings.Contains(text, tc.old) {
						t.Fatalf("%s no longer holds %q: update the case", tc.file, tc.old)
					}
					text, changed = strings.Replace(text, tc.old, tc.new, 1), true
				}
				if err := fsys.WriteFile("/kubernetes/"+e.Name(), []byte(text)); err != nil {
					t.Fatal(err)
				}
			}
			if !changed {
				t.Fatalf("no file %s", tc.file)
			}
			var found []string
			c, err := kustomizeBuild(fsys, "/kubernetes")
			if err != nil {
				found = append(found, err.Error())
			} else {
				checkCluster(func(format string, args ...any) { found = append(found, fmt.Sprintf(format, args...)) }, c, secret)
			}
			if !slices.ContainsFunc(found, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("want a complaint with %q; got %q", tc.want, found)
			}
		})
	}
}

func TestTheReplicatedKubernetesOverlayFencesAndWaitsForAReplica(t *testing.T) {
	const dir = "kubernetes-replicated"
	raw, err := os.ReadFile(filepath.Join(deployments, dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(raw, &kust); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kust.Resources, "../kubernetes") {
		t.Errorf("%s/kustomization.yaml does not build on ../kubernetes (resources %v)", dir, kust.Resources)
	}
	c := build(t, dir)
	base := build(t, "kubernetes")

	// The gateway's environment: the ConfigMap, as the overlay's patch
	// leaves it, and the Secret.
	env := maps.Clone(c.configMaps["gateway-config"].Data)
	for k, v := range exampleSecret(t).StringData {
		env[k] = v
	}
	if maps.Equal(env, base.configMaps["gateway-config"].Data) || env["REDIS_SENTINEL_ADDRS"] == "" {
		t.Fatalf("%s patches no sentinels into ConfigMap gateway-config: the gateway would not know them", dir)
	}
	// (d) The settings the patches show in comments.
	for _, p := range kust.Patches {
		if p.Path != "" {
			for _, a := range commentedSettings(t, dir, p.Path) {
				checkAssignment(t.Errorf, a)
			}
		}
	}

	top := topology{file: dir, gateway: map[string]map[string]string{
		// api.yaml and worker.yaml take it all from the ConfigMap and the Secret (envFrom).
		"gateway-api": env, "gateway-worker": env,
	}}
	services := map[string]corev1.Service{}
	for _, s := range c.services {
		services[s.Name] = s
	}
	for _, o := range c.statefulSets {
		sts, pod := o.Name, o.Spec.Template.Spec
		svc, ok := services[o.Spec.ServiceName]
		if !ok || svc.Spec.ClusterIP != "None" || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("%s: StatefulSet %s: want a headless Service %q that publishes pods not yet ready (they find each other by name while starting)", dir, sts, o.Spec.ServiceName)
		}
		var hosts []string
		for i := range *o.Spec.Replicas {
			hosts = append(hosts, fmt.Sprintf("%s-%d.%s", sts, i, o.Spec.ServiceName))
		}
		configs := map[string]string{} // volume → ConfigMap
		for _, v := range pod.Volumes {
			if v.ConfigMap != nil {
				configs[v.Name] = v.ConfigMap.Name
			}
		}
		for _, ctr := range pod.Containers {
			command := strings.Join(append(slices.Clone(ctr.Command), ctr.Args...), " ")
			// The container's configuration: the ConfigMap it mounts,
			// files named by where it is mounted.
			files := map[string]string{}
			for _, m := range ctr.VolumeMounts {
				for k, v := range c.configMaps[configs[m.Name]].Data {
					files[m.MountPath+"/"+k] = v
				}
			}
			script := ""
			for path, text := range files {
				if strings.Contains(command, path) {
					script = text
				}
			}
			if script == "" {
				t.Errorf("%s: container %s of %s runs no script of its ConfigMap (%s)", dir, ctr.Name, sts, command)
				continue
			}
			if regexp.MustCompile(`\bsentinel\b`).MatchString(command) {
				var conf string
				for path, text := range files {
					if strings.Contains(script, path) && sentinelMonitor.MatchString(text) {
						conf = text
					}
				}
				port := "26379"
				if p := directive(conf, "port"); len(p) == 1 {
					port = p[0]
				}
				for i, h := range hosts {
					top.sentinels = append(top.sentinels, redisNode{fmt.Sprintf("%s-%d/%s", sts, i, ctr.Name), conf})
					top.sentinelAddrs = append(top.sentinelAddrs, h+":"+port)
				}
				// The script fills in the primary of the monitor line.
				if m := sentinelMonitor.FindStringSubmatch(conf); m != nil && strings.Contains(script, "s/"+m[2]+"/") {
					top.placeholders = append(top.placeholders, m[2])
				}
				continue
			}
			var conf string
			for path, text := range files {
				if regexp.MustCompile(`redis-server\s+` + regexp.QuoteMeta(path) + `\b`).MatchString(script) {
					conf = text
				}
			}
			if conf == "" {
				t.Errorf("%s: the script of container %s of %s starts redis-server with no file of its ConfigMap", dir, ctr.Name, sts)
			}
			for i := range hosts {
				top.data = append(top.data, redisNode{fmt.Sprintf("%s-%d/%s", sts, i, ctr.Name), conf + "\n" + script})
			}
			top.dataHosts = append(top.dataHosts, hosts...)
			// The script knows every data node, to ask for the current primary.
			var listed []string
			if m := regexp.MustCompile(`(?m)^\s*nodes="([^"]*)"`).FindStringSubmatch(script); m != nil {
				listed = strings.Fields(m[1])
			}
			if !slices.Equal(listed, hosts) {
				t.Errorf("%s: the script of %s lists the data nodes (nodes=) as %v; want %v", dir, sts, listed, hosts)
			}
		}
	}
	checkTopology(t, top)
}
