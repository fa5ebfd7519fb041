package kubecp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restConfig is a client configuration for a bearer token that dials from
// inside the namespace.
func (cp *ControlPlane) restConfig(token string, caPEM []byte) *rest.Config {
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		Dial:            cp.DialContext,
		// Tests create objects in bursts; client-go's default 5 QPS would
		// make a 100-object set-up take 20 s.
		QPS:   200,
		Burst: 400,
	}
}

// RESTConfig is the admin's client configuration read from Kubeconfig,
// dialing from inside Netns: what a process that did not start the control
// plane (it decoded the ControlPlane) uses to reach it.
func (cp *ControlPlane) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", cp.Netns, err)
	}
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", cp.Netns, err)
	}
	return cp.restConfig(cfg.BearerToken, ca), nil
}

// writeKubeconfig writes a one-context kubeconfig for a bearer token.
func writeKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	cfg.CurrentContext = user
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return nil
}

// ServiceAccountConfig returns a client configuration and a kubeconfig file
// (in Dir) that authenticate as the ServiceAccount namespace/name, which
// must exist: a token from the TokenRequest API, valid for an hour, bound
// to nothing else (as a projected token in a pod is bound to the pod).
// What it may do is what RBAC grants the account.
func (cp *ControlPlane) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, string, error) {
	return cp.ServiceAccountConfigFor(ctx, namespace, name, time.Hour)
}

// ServiceAccountConfigFor is ServiceAccountConfig with a token valid for
// ttl (at least 10 minutes, the API server's floor): a daemon that runs
// with the account's rights for longer than a test (the kube sim's weftds)
// asks for more.
func (cp *ControlPlane) ServiceAccountConfigFor(ctx context.Context, namespace, name string, ttl time.Duration) (*rest.Config, string, error) {
	cs, err := cp.Clientset()
	if err != nil {
		return nil, "", err
	}
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return nil, "", err
	}
	expiry := int64(max(ttl, 10*time.Minute) / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	path := filepath.Join(cp.Dir, "sa-"+namespace+"-"+name+".kubeconfig")
	if err := writeKubeconfig(path, cp.URL, ca, user, tr.Status.Token); err != nil {
		return nil, "", err
	}
	return cp.restConfig(tr.Status.Token, ca), path, nil
}
