//! Published ports: listeners on the host's 127.0.0.1 (never another address) whose connections the
//! VM's gateway carries to a port in the guest. They live in the supervisor, so they go with it:
//! freed when the VM stops, is deleted or dies.

use std::collections::HashMap;
use std::sync::Mutex;

use pyro_net::Inbound;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Ports {
    /// To the gateway; `None` for a VM without a network device.
    inbound: Option<mpsc::Sender<Inbound>>,
    listeners: Mutex<HashMap<u16, JoinHandle<()>>>,
}

impl Ports {
    pub fn new(inbound: Option<mpsc::Sender<Inbound>>) -> Ports {
        Ports {
            inbound,
            listeners: Mutex::new(HashMap::new()),
        }
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<u16, JoinHandle<()>>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens on 127.0.0.1:`host_port` (a free port when `None`) for the guest's `guest_port`;
    /// returns the port bound.
    pub async fn publish(&self, guest_port: u16, host_port: Option<u16>) -> Result<u16, String> {
        let Some(inbound) = self.inbound.clone() else {
            return Err("the VM has no network device to publish ports through".into());
        };
        let listener = TcpListener::bind(("127.0.0.1", host_port.unwrap_or(0)))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "127.0.0.1:{} is already in use on the host",
                    host_port.unwrap_or(0)
                ),
                _ => format!("cannot listen on 127.0.0.1:{}: {e}", host_port.unwrap_or(0)),
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?
            .port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if inbound.send(Inbound { guest_port, stream }).await.is_err() {
                    return;
                }
            }
        });
        if let Some(old) = self.listeners().insert(bound, task) {
            old.abort();
        }
        Ok(bound)
    }

    /// Stops listening on `host_port`; whether it was published.
    pub fn unpublish(&self, host_port: u16) -> bool {
        match self.listeners().remove(&host_port) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        for (_, task) in self.listeners().drain() {
            task.abort();
        }
    }
}
