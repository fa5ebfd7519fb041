// Package objects decodes the Kubernetes objects weft consumes — Service,
// EndpointSlice, NetworkPolicy, Namespace and Pod — from YAML or JSON, with
// the k8s.io/api types as the schema. The same documents drive `weft apply`
// in the sim and, through the API server, a real cluster.
//
// Decoding is strict: an unknown field, a kind weft does not consume or a
// missing name is an error naming the document, so a typo in a policy can
// never widen what it allows. What each kind means (a cluster IP in the
// service CIDR, a valid ipBlock) is checked by the package that consumes it.
package objects

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Kind names a kind weft consumes, as "apiVersion/kind" would be too long to
// key tables by.
type Kind string

const (
	KindService       Kind = "Service"
	KindEndpointSlice Kind = "EndpointSlice"
	KindNetworkPolicy Kind = "NetworkPolicy"
	KindNamespace     Kind = "Namespace"
	KindPod           Kind = "Pod"
)

// apiVersions maps each kind to the one apiVersion weft accepts for it.
var apiVersions = map[Kind]string{
	KindService:       "v1",
	KindEndpointSlice: "discovery.k8s.io/v1",
	KindNetworkPolicy: "networking.k8s.io/v1",
	KindNamespace:     "v1",
	KindPod:           "v1",
}

// Kinds lists the kinds weft consumes, in the order objects of one input
// are best applied (namespaces before what lives in them, a Service before
// its EndpointSlices).
var Kinds = []Kind{KindNamespace, KindPod, KindService, KindEndpointSlice, KindNetworkPolicy}

// Object is one decoded document: exactly one of the pointers is set.
type Object struct {
	Kind          Kind
	Service       *corev1.Service
	EndpointSlice *discoveryv1.EndpointSlice
	NetworkPolicy *networkingv1.NetworkPolicy
	Namespace     *corev1.Namespace
	Pod           *corev1.Pod
}

// Meta is the object's metadata.
func (o Object) Meta() *metav1.ObjectMeta {
	switch {
	case o.Service != nil:
		return &o.Service.ObjectMeta
	case o.EndpointSlice != nil:
		return &o.EndpointSlice.ObjectMeta
	case o.NetworkPolicy != nil:
		return &o.NetworkPolicy.ObjectMeta
	case o.Namespace != nil:
		return &o.Namespace.ObjectMeta
	case o.Pod != nil:
		return &o.Pod.ObjectMeta
	}
	return nil
}

// Key is "Kind/namespace/name" ("Namespace//name" for the cluster-scoped
// Namespace): unique per object, and what registries store it under.
func (o Object) Key() string {
	m := o.Meta()
	if m == nil {
		return string(o.Kind) + "//"
	}
	return string(o.Kind) + "/" + m.Namespace + "/" + m.Name
}

// String names the object for messages: "Service default/web".
func (o Object) String() string {
	m := o.Meta()
	if m == nil {
		return string(o.Kind)
	}
	if m.Namespace == "" {
		return string(o.Kind) + " " + m.Name
	}
	return string(o.Kind) + " " + m.Namespace + "/" + m.Name
}

// MaxDocumentBytes bounds one document, so a runaway input is refused
// rather than decoded into memory.
const MaxDocumentBytes = 4 << 20

// Decode reads every document of a YAML stream ("---" separated) or JSON
// input. Namespaced objects without a namespace get "default", as kubectl
// gives them. Empty documents are skipped; an input with no object is an
// error.
func Decode(r io.Reader) ([]Object, error) {
	br := bufio.NewReader(r)
	// JSON (a stream of objects) goes through the JSON decoder; YAML is
	// split into its documents and each handed to DecodeOne as written:
	// converting it to JSON first would drop a key given twice (the last
	// one winning) before the strict decode could refuse it.
	next := utilyaml.NewYAMLReader(br).Read
	if head, _ := br.Peek(1024); bytes.HasPrefix(bytes.TrimSpace(head), []byte("{")) {
		dec := utilyaml.NewYAMLOrJSONDecoder(br, 4096)
		next = func() ([]byte, error) {
			var raw rawDoc
			err := dec.Decode(&raw)
			return raw, err
		}
	}
	var objs []Object
	for doc := 1; ; doc++ {
		raw, err := next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if empty, err := emptyDoc(raw); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		} else if empty {
			continue
		}
		if len(raw) > MaxDocumentBytes {
			return nil, fmt.Errorf("document %d: %d bytes, more than the %d weft accepts", doc, len(raw), MaxDocumentBytes)
		}
		o, err := DecodeOne(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, errors.New("no Kubernetes object in the input")
	}
	return objs, nil
}

// emptyDoc reports a document with no object: blank, comments only, or
// null.
func emptyDoc(raw []byte) (bool, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return true, nil
	}
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return false, err
	}
	return bytes.Equal(bytes.TrimSpace(js), []byte("null")), nil
}

// rawDoc keeps a document's JSON as is for the second, typed decode.
type rawDoc []byte

func (r *rawDoc) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// DecodeOne decodes one JSON (or YAML) document strictly into its typed
// object.
func DecodeOne(doc []byte) (Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return Object{}, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if tm.Kind == "" || tm.APIVersion == "" {
		return Object{}, errors.New("not a Kubernetes object: apiVersion and kind are required")
	}
	kind := Kind(tm.Kind)
	want, ok := apiVersions[kind]
	if !ok {
		return Object{}, fmt.Errorf("kind %q (%s) is not one weft consumes (Service, EndpointSlice, NetworkPolicy, Namespace, Pod)", tm.Kind, tm.APIVersion)
	}
	if tm.APIVersion != want {
		return Object{}, fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, want)
	}
	o := Object{Kind: kind}
	var target any
	switch kind {
	case KindService:
		o.Service = new(corev1.Service)
		target = o.Service
	case KindEndpointSlice:
		o.EndpointSlice = new(discoveryv1.EndpointSlice)
		target = o.EndpointSlice
	case KindNetworkPolicy:
		o.NetworkPolicy = new(networkingv1.NetworkPolicy)
		target = o.NetworkPolicy
	case KindNamespace:
		o.Namespace = new(corev1.Namespace)
		target = o.Namespace
	case KindPod:
		o.Pod = new(corev1.Pod)
		target = o.Pod
	}
	// Strict: a key given twice in YAML is an error, not the last one
	// winning (JSON's duplicates are the strict decode's below).
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	// sigs.k8s.io/json as the API server decodes: keys are case-sensitive
	// (encoding/json would take "clusterIp" for clusterIP), and unknown or
	// duplicate fields are errors rather than silently dropped.
	strict, err := kjson.UnmarshalStrict(js, target, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return Object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return Object{}, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	m := o.Meta()
	if m.Name == "" {
		return Object{}, fmt.Errorf("%s: metadata.name is required", tm.Kind)
	}
	if kind == KindNamespace {
		if m.Namespace != "" {
			return Object{}, fmt.Errorf("Namespace %s: a Namespace has no metadata.namespace", m.Name)
		}
	} else if m.Namespace == "" {
		m.Namespace = "default"
	}
	return o, nil
}

// Encode gives the object's canonical JSON, as registries store it.
func Encode(o Object) ([]byte, error) {
	var obj runtime.Object
	switch {
	case o.Service != nil:
		obj = o.Service
	case o.EndpointSlice != nil:
		obj = o.EndpointSlice
	case o.NetworkPolicy != nil:
		obj = o.NetworkPolicy
	case o.Namespace != nil:
		obj = o.Namespace
	case o.Pod != nil:
		obj = o.Pod
	default:
		return nil, errors.New("empty object")
	}
	// TypeMeta is what DecodeOne needs to read it back; objects built in Go
	// often leave it empty. Set it on a copy: the caller's object is not ours.
	c := obj.DeepCopyObject()
	c.GetObjectKind().SetGroupVersionKind(schema.FromAPIVersionAndKind(apiVersions[o.Kind], string(o.Kind)))
	return yaml.Marshal(c)
}
