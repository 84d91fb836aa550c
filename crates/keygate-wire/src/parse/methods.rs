//! Access method requests.

use keygate_app::methods::EncodeCard;
use keygate_app::unlock::{UnlockDoor, UnlockEntrance};
use keygate_domain::validate::{self};
use keygate_domain::{Error, Resource};
use keygate_proto::v1;

use super::{IntoCommand, claim};

impl IntoCommand for v1::EncodeAccessMethodRequest {
    type Command = EncodeCard;

    fn into_command(self) -> Result<EncodeCard, Error> {
        let fingerprint = v1::EncodeAccessMethodRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::EncodeAccessMethodRequest {
            request_id,
            access_method_id,
            acs_encoder_id,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        let access_method_id = validate::id(
            "access_method_id",
            &access_method_id,
            Resource::AccessMethod,
        )?;
        let acs_encoder_id = validate::id("acs_encoder_id", &acs_encoder_id, Resource::Encoder)?;
        Ok(EncodeCard {
            idem: claim("EncodeAccessMethod", request_id, &fingerprint),
            access_method_id,
            acs_encoder_id,
        })
    }
}

impl IntoCommand for v1::UnlockDoorRequest {
    type Command = UnlockDoor;

    fn into_command(self) -> Result<UnlockDoor, Error> {
        let fingerprint = v1::UnlockDoorRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::UnlockDoorRequest {
            access_method_id,
            acs_entrance_id,
            request_id,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        let access_method_id = validate::id(
            "access_method_id",
            &access_method_id,
            Resource::AccessMethod,
        )?;
        let acs_entrance_id =
            validate::id("acs_entrance_id", &acs_entrance_id, Resource::Entrance)?;
        Ok(UnlockDoor {
            idem: claim("UnlockDoor", request_id, &fingerprint),
            access_method_id,
            acs_entrance_id,
        })
    }
}

impl IntoCommand for v1::UnlockEntranceRequest {
    type Command = UnlockEntrance;

    fn into_command(self) -> Result<UnlockEntrance, Error> {
        let fingerprint = v1::UnlockEntranceRequest {
            request_id: String::new(),
            ..self.clone()
        };
        let v1::UnlockEntranceRequest {
            acs_entrance_id,
            request_id,
        } = self;
        let request_id = validate::request_id(&request_id).map_err(|v| Error::InvalidArgument {
            violations: vec![v],
        })?;
        let acs_entrance_id =
            validate::id("acs_entrance_id", &acs_entrance_id, Resource::Entrance)?;
        Ok(UnlockEntrance {
            idem: claim("UnlockEntrance", request_id, &fingerprint),
            acs_entrance_id,
        })
    }
}
