//! User identities: the people who receive access.

use keygate_domain::Error;
use keygate_domain::ids::{UserIdentityId, WorkspaceId};

use crate::App;

impl App {
    /// Deletes a person's record. (Their grants, credentials and Instant Keys are not revoked
    /// yet: that is the door-safety work that follows this layer.)
    pub async fn delete_user_identity(
        &self,
        ws: WorkspaceId,
        id: UserIdentityId,
    ) -> Result<(), Error> {
        self.store.delete_user_identity(ws, id).await
    }
}
