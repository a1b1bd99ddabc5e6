//! `project ...`: create, members and roles.

use super::*;

pub(super) async fn project(conn: &Conn, command: ProjectCommand) -> Result<Output, CtlError> {
    let mut admin = conn.admin();
    let member = |project: String, user: String, role: &str| pb::SetProjectMemberRequest {
        project,
        user,
        role: role.to_string(),
    };
    match command {
        ProjectCommand::List => {
            let reply = conn
                .answer(admin.list_projects(conn.request(pb::ListProjectsRequest::default())?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                project: String,
                title: String,
                role: String,
            }
            let rows: Vec<Row> = reply
                .projects
                .into_iter()
                .map(|p| Row {
                    project: p.project,
                    title: p.title,
                    role: p.role,
                })
                .collect();
            Ok(Output::table(&["project", "title", "role"], &rows))
        }
        ProjectCommand::Show { project } => {
            let reply = conn
                .answer(admin.show_project(conn.request(pb::ShowProjectRequest {
                    project,
                    ..Default::default()
                })?))
                .await?;
            #[derive(Serialize)]
            struct Row {
                user: String,
                role: String,
            }
            let mut rows: Vec<Row> = reply
                .members
                .iter()
                .map(|m| Row {
                    user: m.user.clone(),
                    role: m.role.clone(),
                })
                .collect();
            if !reply.everyone.is_empty() {
                rows.push(Row {
                    user: "(everyone)".into(),
                    role: reply.everyone.clone(),
                });
            }
            let members = Output::table(&["user", "role"], &rows);
            Ok(Output {
                text: format!(
                    "{}: {}

{}",
                    reply.project, reply.title, members.text
                ),
                json: serde_json::json!({
                    "project": reply.project,
                    "title": reply.title,
                    "everyone": reply.everyone,
                    "members": members.json,
                }),
            })
        }
        ProjectCommand::Create { project, title } => {
            let reply = conn
                .answer(admin.create_project(conn.request(pb::CreateProjectRequest {
                    project: project.clone(),
                    title,
                })?))
                .await?;
            let text = if reply.changed {
                format!("project {project} created")
            } else {
                format!("project {project} already existed")
            };
            Ok(Output::message(
                text,
                serde_json::json!({"project": project, "changed": reply.changed, "index": reply.index}),
            ))
        }
        ProjectCommand::Add {
            project,
            user,
            role,
        } => {
            let role = match role {
                Role::Manager => "manager",
                Role::Customer => "customer",
            };
            let reply = conn
                .answer(admin.set_project_member(conn.request(member(
                    project.clone(),
                    user.clone(),
                    role,
                ))?))
                .await?;
            Ok(Output::message(
                format!("{user} is {role} of project {project}"),
                serde_json::json!({"project": project, "user": user, "role": role, "changed": reply.changed}),
            ))
        }
        ProjectCommand::Remove { project, user } => {
            let reply = conn
                .answer(admin.set_project_member(conn.request(member(
                    project.clone(),
                    user.clone(),
                    "",
                ))?))
                .await?;
            Ok(Output::message(
                format!("{user} has no role in project {project}"),
                serde_json::json!({"project": project, "user": user, "changed": reply.changed}),
            ))
        }
    }
}
