"""Notifications: the email sender the app started with, and a mailer bound to the request."""

from typing import Annotated

from fastapi import BackgroundTasks, Depends, Request

from storeroom.core.dependencies import AppSettings
from storeroom.notifications import service as notifications_service
from storeroom.notifications.senders import EmailSender


def get_email_sender(request: Request) -> EmailSender:
    sender: EmailSender = request.app.state.email_sender
    return sender


AppEmailSender = Annotated[EmailSender, Depends(get_email_sender)]


def get_mailer(
    sender: AppEmailSender, settings: AppSettings, background_tasks: BackgroundTasks
) -> notifications_service.Mailer:
    return notifications_service.Mailer(sender, settings, background_tasks.add_task)


AppMailer = Annotated[notifications_service.Mailer, Depends(get_mailer)]
